"""JWT authentication at the HTTP edge: every discovery, service and feedback call, bare 401s,
audience per URL, the issuer's own FHIR servers, and no token in the logs."""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from cds_service.trust import load_issuers
from tests.conftest import NOW, ROOT, SERVICE_URL, app_with, load_request
from tests.fhir_stub import StubFhirServer, fhir

BASE = "https://cds.example.org"
ISS = "https://ehr.example.org"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def token(key: ec.EllipticCurvePrivateKey, path: str, **claims: Any) -> str:
    now = int(NOW.timestamp())
    payload = {
        "iss": ISS,
        "sub": "ehr-client",
        "aud": BASE + path,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    return jwt.encode(payload, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def headers(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture
def secured(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey, request: pytest.FixtureRequest
) -> Iterator[Flask]:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    fhir_servers = getattr(request, "param", [])
    issuers = {
        "issuers": [
            {
                "iss": ISS,
                "jwks": {"keys": [{**public, "kid": "k1", "alg": "ES384", "use": "sig"}]},
                "fhir_servers": fhir_servers,
            }
        ]
    }
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(issuers))
    with app_with(
        tmp_path, auth="jwt", trusted_issuers_file=path, public_base_url=BASE
    ) as application:
        yield application


def test_every_protected_route_needs_a_token(secured: Flask) -> None:
    client = secured.test_client()
    for method, path in [
        ("GET", "/cds-services"),
        ("POST", SERVICE_URL),
        ("POST", f"{SERVICE_URL}/feedback"),
        ("GET", f"{SERVICE_URL}/feedback/summary"),
    ]:
        response = client.open(path, method=method, json={})
        assert response.status_code == 401, path
        assert response.get_data() == b""  # no detail for the caller
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200
    assert client.options(SERVICE_URL).status_code in (200, 204)  # CORS preflight stays open


def test_valid_tokens_are_accepted_for_their_own_url_only(
    secured: Flask, key: ec.EllipticCurvePrivateKey
) -> None:
    client = secured.test_client()
    ok = client.get("/cds-services", headers=headers(token(key, "/cds-services")))
    assert ok.status_code == 200
    answer = client.post(
        SERVICE_URL,
        json=load_request("02-aluminium-egfr-22"),
        headers=headers(token(key, SERVICE_URL)),
    )
    assert answer.status_code == 200
    assert answer.json["cards"]
    # A discovery token is not valid for the service (aud is the exact URL called).
    wrong_aud = client.post(
        SERVICE_URL,
        json=load_request("02-aluminium-egfr-22"),
        headers=headers(token(key, "/cds-services")),
    )
    assert wrong_aud.status_code == 401


def test_a_token_cannot_be_replayed(secured: Flask, key: ec.EllipticCurvePrivateKey) -> None:
    client = secured.test_client()
    tok = token(key, "/cds-services")
    assert client.get("/cds-services", headers=headers(tok)).status_code == 200
    assert client.get("/cds-services", headers=headers(tok)).status_code == 401


def test_refusals_never_log_the_token(
    secured: Flask, key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    client = secured.test_client()
    expired = token(key, "/cds-services", exp=int(NOW.timestamp()) - 3600)
    with caplog.at_level(logging.DEBUG):
        assert client.get("/cds-services", headers=headers(expired)).status_code == 401
    assert "refused a call to /cds-services" in caplog.text
    assert expired not in caplog.text
    assert expired.split(".")[1] not in caplog.text  # not even the claims part


@pytest.mark.parametrize("secured", [["http://127.0.0.1:1/elsewhere"]], indirect=True)
def test_fhir_servers_come_from_the_issuer(secured: Flask, key: ec.EllipticCurvePrivateKey) -> None:
    # The request names a FHIR server its issuer does not list: nothing is fetched, 412.
    with StubFhirServer({"/fhir/": lambda _p: fhir({"resourceType": "Bundle"})}) as stub:
        body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
        body["prefetch"].pop("observations")
        body["fhirServer"] = stub.base_url
        response = secured.test_client().post(
            SERVICE_URL, json=body, headers=headers(token(key, SERVICE_URL))
        )
    assert response.status_code == 412
    assert stub.seen == []  # no request, no token, left the service


def test_authentication_off_is_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), app_with(tmp_path):
        pass
    assert "AUTHENTICATION IS OFF" in caplog.text


def test_the_sandbox_example_file_loads() -> None:

    issuers = load_issuers(ROOT / "docs" / "trusted-issuers.sandbox.json")
    sandbox = issuers["https://sandbox.cds-hooks.org"]
    assert sandbox.allowed_jku == ("https://sandbox.cds-hooks.org/.well-known/jwks.json",)


def test_an_issuers_file_without_issuers_stops_the_start(tmp_path: Path) -> None:
    empty = tmp_path / "issuers.json"
    empty.write_text('{"issuers": []}')
    with (
        pytest.raises(ValueError, match="non-empty 'issuers'"),
        app_with(tmp_path, auth="jwt", trusted_issuers_file=empty),
    ):
        pass


def test_algorithms_are_opt_in(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # Only RS384 configured: an ES384 token is refused.
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "issuers.json"
    path.write_text(
        json.dumps({"issuers": [{"iss": ISS, "jwks": {"keys": [{**public, "kid": "k1"}]}}]})
    )
    with app_with(
        tmp_path,
        auth="jwt",
        trusted_issuers_file=path,
        public_base_url=BASE,
        jwt_algorithms=("RS384",),
    ) as app:
        tok = token(key, "/cds-services")
        assert app.test_client().get("/cds-services", headers=headers(tok)).status_code == 401
