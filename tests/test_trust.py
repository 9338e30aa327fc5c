"""JWT authentication of CDS Clients (cds_service/trust.py) and the jti replay store.

Keys are generated here (EC P-384 for ES384, RSA 2048 for RS384) and tokens signed with PyJWT;
the clock is pinned, so nothing depends on the time the tests run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import func, select

from cds_service.store import Store, seen_jtis
from cds_service.trust import (
    AuthError,
    JwtVerifier,
    TrustedIssuer,
    VerifiedClient,
    fetch_jwks_https,
    load_issuers,
)

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
ISS = "https://ehr.example.org"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
JKU = "https://keys.ehr.example.org/jwks.json"
AUD = "https://cds.example.org/cds-services/calcinosis-patient-view"
DISCOVERY_AUD = "https://cds.example.org/cds-services"


# ---------------------------------------------------------------------------------- helpers


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeFetch:
    """JWK Sets by URL; records every fetch."""

    def __init__(self, sets: dict[str, dict[str, Any]] | None = None) -> None:
        self.sets = dict(sets or {})
        self.calls: list[str] = []

    def __call__(self, url: str) -> dict[str, Any]:
        self.calls.append(url)
        if url not in self.sets:
            raise OSError(f"no JWK Set at {url}")
        return self.sets[url]


class MemoryReplay:
    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], datetime] = {}

    def __call__(self, iss: str, jti: str, until: datetime) -> bool:
        if (iss, jti) in self.seen:
            return False
        self.seen[(iss, jti)] = until
        return True


def public_jwk(private_key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    algorithm = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig")
    if alg:
        jwk["alg"] = alg
    return jwk


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(NOW.timestamp())
    values: dict[str, Any] = {
        "iss": ISS,
        "sub": "ehr-client-1",
        "aud": AUD,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def sign(key: Any, alg: str = "ES384", kid: str | None = "ec-1", **headers: Any) -> Callable:
    """A token factory: sign(key)(**claim_overrides) -> compact JWT."""

    def make(**overrides: Any) -> str:
        extra = {"kid": kid, **headers} if kid is not None else dict(headers)
        return jwt.encode(claims(**overrides), key, algorithm=alg, headers=extra)

    return make


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ec_key_2() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fetch(ec_key: ec.EllipticCurvePrivateKey) -> FakeFetch:
    return FakeFetch({JWKS_URL: {"keys": [public_jwk(ec_key, "ec-1", "ES384")]}})


@pytest.fixture
def issuer() -> TrustedIssuer:
    return TrustedIssuer(iss=ISS, jwks_url=JWKS_URL)


def make_verifier(
    issuers: list[TrustedIssuer],
    fetch: FakeFetch,
    clock: Clock,
    replay: Callable[[str, str, datetime], bool] | None = None,
    **options: Any,
) -> JwtVerifier:
    return JwtVerifier(
        {i.iss: i for i in issuers},
        replay=replay or MemoryReplay(),
        fetch_jwks=fetch,
        clock=clock,
        **options,
    )


@pytest.fixture
def verifier(issuer: TrustedIssuer, fetch: FakeFetch, clock: Clock) -> JwtVerifier:
    return make_verifier([issuer], fetch, clock)


def refused(verifier: JwtVerifier, header: str | None, audience: str = AUD) -> str:
    """The reason `header` is refused (and the token never appears in it)."""
    with pytest.raises(AuthError) as caught:
        verifier.verify(header, audience)
    token = (header or "").partition(" ")[2]
    assert not token or token not in str(caught.value)
    return caught.value.reason


# ---------------------------------------------------------------------------------- accepted


def test_valid_es384_from_jwks_url(verifier: JwtVerifier, fetch: FakeFetch, ec_key) -> None:
    token = sign(ec_key)(tenant="t-1")
    client = verifier.verify(bearer(token), AUD)
    assert isinstance(client, VerifiedClient)
    assert (client.iss, client.sub, client.tenant) == (ISS, "ehr-client-1", "t-1")
    assert client.jti == jwt.decode(token, options={"verify_signature": False})["jti"]
    assert client.issuer.jwks_url == JWKS_URL
    assert fetch.calls == [JWKS_URL]
    # The cached set serves the next token.
    verifier.verify(bearer(sign(ec_key)()), AUD)
    assert fetch.calls == [JWKS_URL]


def test_valid_rs384_from_static_jwks(rsa_key, clock: Clock) -> None:
    issuer = TrustedIssuer(iss=ISS, jwks={"keys": [public_jwk(rsa_key, "rsa-1")]})
    fetch = FakeFetch()
    verifier = make_verifier([issuer], fetch, clock)
    client = verifier.verify(bearer(sign(rsa_key, "RS384", "rsa-1")()), AUD)
    assert client.iss == ISS
    assert fetch.calls == []


def test_aud_list_and_lowercase_bearer(verifier: JwtVerifier, ec_key) -> None:
    token = sign(ec_key)(aud=["https://other.example.org/x", AUD])
    assert verifier.verify(f"bearer  {token}", AUD).iss == ISS


@pytest.mark.parametrize(("exp_offset", "ok"), [(-30, True), (-61, False), (-3600, False)])
def test_expiry_with_leeway(verifier: JwtVerifier, ec_key, exp_offset: int, ok: bool) -> None:
    now = int(NOW.timestamp())
    header = bearer(sign(ec_key)(iat=now - 600, exp=now + exp_offset))
    if ok:
        verifier.verify(header, AUD)
    else:
        assert refused(verifier, header) == "expired"


@pytest.mark.parametrize(("iat_offset", "ok"), [(45, True), (120, False)])
def test_iat_in_the_future(verifier: JwtVerifier, ec_key, iat_offset: int, ok: bool) -> None:
    now = int(NOW.timestamp())
    header = bearer(sign(ec_key)(iat=now + iat_offset, exp=now + 600))
    if ok:
        verifier.verify(header, AUD)
    else:
        assert refused(verifier, header) == "iat in the future"


def test_lifetime_longer_than_allowed(verifier: JwtVerifier, ec_key) -> None:
    now = int(NOW.timestamp())
    assert refused(verifier, bearer(sign(ec_key)(exp=now + 7200))) == "lifetime too long"


# ---------------------------------------------------------------------------------- refused


def test_wrong_aud(verifier: JwtVerifier, ec_key) -> None:
    # A token minted for discovery does not open a service, nor one for another host.
    assert refused(verifier, bearer(sign(ec_key)(aud=DISCOVERY_AUD))) == "aud mismatch"
    other = "https://evil.example.org/cds-services/calcinosis-patient-view"
    assert refused(verifier, bearer(sign(ec_key)(aud=other))) == "aud mismatch"
    assert refused(verifier, bearer(sign(ec_key)(aud=[other]))) == "aud mismatch"


def test_unknown_iss(verifier: JwtVerifier, fetch: FakeFetch, ec_key) -> None:
    header = bearer(sign(ec_key)(iss="https://stranger.example.org"))
    assert refused(verifier, header) == "untrusted iss"
    assert fetch.calls == []


def test_unknown_kid_found_after_one_refresh(
    verifier: JwtVerifier, fetch: FakeFetch, clock: Clock, ec_key, ec_key_2
) -> None:
    verifier.verify(bearer(sign(ec_key)()), AUD)
    assert fetch.calls == [JWKS_URL]
    # The client rotates its key: the new kid is published, then used.
    fetch.sets[JWKS_URL] = {
        "keys": [public_jwk(ec_key, "ec-1", "ES384"), public_jwk(ec_key_2, "ec-2", "ES384")]
    }
    clock.advance(61)
    client = verifier.verify(bearer(sign(ec_key_2, kid="ec-2")()), AUD)
    assert client.iss == ISS
    assert fetch.calls == [JWKS_URL, JWKS_URL]


def test_unknown_kid_refresh_is_rate_limited(
    verifier: JwtVerifier, fetch: FakeFetch, clock: Clock, ec_key, ec_key_2
) -> None:
    verifier.verify(bearer(sign(ec_key)()), AUD)
    clock.advance(61)
    forged = sign(ec_key_2, kid="made-up")
    assert refused(verifier, bearer(forged())) == "unknown kid"
    assert refused(verifier, bearer(forged())) == "unknown kid"
    assert fetch.calls == [JWKS_URL, JWKS_URL]  # two unknown kids, one refresh
    clock.advance(30)
    assert refused(verifier, bearer(forged())) == "unknown kid"
    assert len(fetch.calls) == 2
    clock.advance(31)
    assert refused(verifier, bearer(forged())) == "unknown kid"
    assert len(fetch.calls) == 3


def test_unknown_kid_on_first_fetch_fetches_once(
    issuer: TrustedIssuer, fetch: FakeFetch, clock: Clock, ec_key_2
) -> None:
    verifier = make_verifier([issuer], fetch, clock)
    forged = sign(ec_key_2, kid="made-up")
    assert refused(verifier, bearer(forged())) == "unknown kid"
    assert refused(verifier, bearer(forged())) == "unknown kid"
    assert fetch.calls == [JWKS_URL]


def test_jwks_unavailable_then_retried_after_interval(
    issuer: TrustedIssuer, clock: Clock, ec_key
) -> None:
    fetch = FakeFetch()  # nothing published yet
    verifier = make_verifier([issuer], fetch, clock)
    assert refused(verifier, bearer(sign(ec_key)())) == "jwks unavailable"
    assert refused(verifier, bearer(sign(ec_key)())) == "jwks unavailable"
    assert fetch.calls == [JWKS_URL]
    fetch.sets[JWKS_URL] = {"keys": [public_jwk(ec_key, "ec-1")]}
    clock.advance(60)
    verifier.verify(bearer(sign(ec_key)()), AUD)
    assert fetch.calls == [JWKS_URL, JWKS_URL]


def test_removed_key_stops_working_after_cache_ttl(
    verifier: JwtVerifier, fetch: FakeFetch, clock: Clock, ec_key
) -> None:
    def fresh() -> str:
        now = int(clock().timestamp())
        return bearer(sign(ec_key)(iat=now, exp=now + 300))

    verifier.verify(fresh(), AUD)
    fetch.sets[JWKS_URL] = {"keys": []}  # the client revokes its key
    clock.advance(1800)
    verifier.verify(fresh(), AUD)  # still cached
    clock.advance(1800)
    assert refused(verifier, fresh()) == "unknown kid"
    assert fetch.calls == [JWKS_URL, JWKS_URL]


def test_alg_none_is_refused_even_if_configured(
    issuer: TrustedIssuer, fetch: FakeFetch, clock: Clock
) -> None:
    verifier = make_verifier([issuer], fetch, clock, algorithms=("ES384", "none"))
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "ec-1"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    assert refused(verifier, bearer(f"{header}.{payload}.")) == "alg not allowed"
    assert fetch.calls == []


def test_hs256_signed_with_the_public_key_is_refused(
    issuer: TrustedIssuer, clock: Clock, rsa_key
) -> None:
    """The classic confusion attack: HMAC keyed with the (public) PEM of the RSA key."""
    jwks = {"keys": [public_jwk(rsa_key, "rsa-1")]}
    fetch = FakeFetch({JWKS_URL: jwks})
    verifier = make_verifier([issuer], fetch, clock, algorithms=("RS384", "HS256"))
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64url(signature)}"
    assert refused(verifier, bearer(token)) == "alg not allowed"
    assert fetch.calls == []


def test_only_symmetric_algorithms_configured_is_an_error(issuer: TrustedIssuer) -> None:
    with pytest.raises(ValueError, match="no acceptable"):
        JwtVerifier({ISS: issuer}, algorithms=("HS256", "hs512", "none"), replay=MemoryReplay())


def test_alg_not_in_configured_list(verifier: JwtVerifier, fetch: FakeFetch) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    fetch.sets[JWKS_URL]["keys"].append(public_jwk(p256, "p256"))
    token = jwt.encode(claims(), p256, algorithm="ES256", headers={"kid": "p256"})
    assert refused(verifier, bearer(token)) == "alg not allowed"


def test_token_alg_must_match_the_key(issuer: TrustedIssuer, clock: Clock, rsa_key) -> None:
    fetch = FakeFetch({JWKS_URL: {"keys": [public_jwk(rsa_key, "k", "RS384")]}})
    verifier = make_verifier([issuer], fetch, clock, algorithms=("RS384", "PS384"))
    token = sign(rsa_key, "PS384", "k")()
    assert refused(verifier, bearer(token)) == "alg does not match key"


def test_key_of_another_type_is_unusable(
    issuer: TrustedIssuer, clock: Clock, ec_key, rsa_key
) -> None:
    # The JWK has no alg: an RS384 token naming an EC key's kid must still fail.
    fetch = FakeFetch({JWKS_URL: {"keys": [public_jwk(ec_key, "k")]}})
    verifier = make_verifier([issuer], fetch, clock)
    assert refused(verifier, bearer(sign(rsa_key, "RS384", "k")())) == "key unusable for alg"


def test_signature_by_another_key(verifier: JwtVerifier, ec_key_2) -> None:
    assert refused(verifier, bearer(sign(ec_key_2, kid="ec-1")())) == "bad signature"


def test_tampered_payload(verifier: JwtVerifier, ec_key) -> None:
    header, _, signature = sign(ec_key)().split(".")
    payload = b64url(json.dumps(claims(sub="someone-else")).encode())
    assert refused(verifier, bearer(f"{header}.{payload}.{signature}")) == "bad signature"


def test_replayed_jti_in_memory(verifier: JwtVerifier, ec_key) -> None:
    token = sign(ec_key)()
    verifier.verify(bearer(token), AUD)
    assert refused(verifier, bearer(token)) == "replayed jti"


def test_failed_token_does_not_consume_its_jti(verifier: JwtVerifier, ec_key) -> None:
    jti = str(uuid.uuid4())
    assert refused(verifier, bearer(sign(ec_key)(jti=jti, aud=DISCOVERY_AUD))) == "aud mismatch"
    verifier.verify(bearer(sign(ec_key)(jti=jti)), AUD)


def test_disallowed_jku(verifier: JwtVerifier, fetch: FakeFetch, ec_key) -> None:
    token = sign(ec_key, jku="https://attacker.example.net/jwks.json")()
    assert refused(verifier, bearer(token)) == "jku not allowed"
    assert fetch.calls == []


def test_allowed_jku_is_where_keys_come_from(clock: Clock, ec_key, ec_key_2) -> None:
    issuer = TrustedIssuer(iss=ISS, jwks_url=JWKS_URL, allowed_jku=(JKU,))
    fetch = FakeFetch(
        {
            JWKS_URL: {"keys": [public_jwk(ec_key, "ec-1")]},
            JKU: {"keys": [public_jwk(ec_key_2, "ec-1")]},
        }
    )
    verifier = make_verifier([issuer], fetch, clock)
    client = verifier.verify(bearer(sign(ec_key_2, jku=JKU)()), AUD)
    assert client.iss == ISS
    assert fetch.calls == [JKU]
    # The key of the jwks_url, under the same kid, is not what a jku token is checked with.
    assert refused(verifier, bearer(sign(ec_key, jku=JKU)())) == "bad signature"


def test_jku_of_another_issuer_is_not_allowed(clock: Clock, ec_key) -> None:
    other = TrustedIssuer(iss="https://other.example.org", jwks_url=JKU, allowed_jku=(JKU,))
    fetch = FakeFetch({JWKS_URL: {"keys": [public_jwk(ec_key, "ec-1")]}})
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks_url=JWKS_URL), other], fetch, clock)
    assert refused(verifier, bearer(sign(ec_key, jku=JKU)())) == "jku not allowed"


def test_static_jwks_serves_a_token_that_names_an_allowed_jku(clock: Clock, ec_key) -> None:
    # The CDS Hooks Sandbox always sends a jku: with the key set given out of band, nothing
    # is downloaded (the service works offline), whatever the jku answers.
    issuer = TrustedIssuer(
        iss=ISS,
        jwks_url=JWKS_URL,
        jwks={"keys": [public_jwk(ec_key, "ec-1", "ES384")]},
        allowed_jku=(JKU,),
    )
    fetch = FakeFetch()  # every URL fails: offline
    verifier = make_verifier([issuer], fetch, clock)
    assert verifier.verify(bearer(sign(ec_key, jku=JKU)()), AUD).iss == ISS
    assert verifier.verify(bearer(sign(ec_key)()), AUD).iss == ISS
    assert fetch.calls == []


def test_static_jwks_still_refuses_a_jku_not_allowed(clock: Clock, ec_key) -> None:
    issuer = TrustedIssuer(iss=ISS, jwks={"keys": [public_jwk(ec_key, "ec-1")]}, allowed_jku=(JKU,))
    fetch = FakeFetch()
    verifier = make_verifier([issuer], fetch, clock)
    token = sign(ec_key, jku="https://attacker.example.net/jwks.json")()
    assert refused(verifier, bearer(token)) == "jku not allowed"
    # Without an allowlist, no jku is acceptable even though the static set holds the kid.
    bare = make_verifier([TrustedIssuer(iss=ISS, jwks=issuer.jwks)], fetch, clock)
    assert refused(bare, bearer(sign(ec_key, jku=JKU)())) == "jku not allowed"
    assert fetch.calls == []


def test_static_jwks_without_the_kid_falls_back_to_the_allowed_jku(
    clock: Clock, ec_key, ec_key_2
) -> None:
    issuer = TrustedIssuer(iss=ISS, jwks={"keys": [public_jwk(ec_key, "ec-1")]}, allowed_jku=(JKU,))
    fetch = FakeFetch({JKU: {"keys": [public_jwk(ec_key_2, "ec-2")]}})
    verifier = make_verifier([issuer], fetch, clock)
    assert verifier.verify(bearer(sign(ec_key_2, kid="ec-2", jku=JKU)()), AUD).iss == ISS
    assert fetch.calls == [JKU]
    # A kid the static set holds is checked with the static key, not the downloaded one.
    assert refused(verifier, bearer(sign(ec_key_2, jku=JKU)())) == "bad signature"
    assert fetch.calls == [JKU]


def test_shipped_sandbox_issuer_works_offline(clock: Clock) -> None:
    """docs/trusted-issuers.sandbox.json holds the Sandbox's public key set, so its tokens
    (ES384, always with a jku) verify without the network. The signing key here is made up:
    only the kid and the refusal of a foreign signature are checked with the shipped key."""
    path = Path(__file__).resolve().parents[1] / "docs" / "trusted-issuers.sandbox.json"
    issuers = load_issuers(path)
    sandbox = issuers["https://sandbox.cds-hooks.org"]
    jku = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
    assert jku in sandbox.allowed_jku
    assert sandbox.jwks is not None
    kid = sandbox.jwks["keys"][0]["kid"]
    fetch = FakeFetch()
    verifier = JwtVerifier(issuers, replay=MemoryReplay(), fetch_jwks=fetch, clock=clock)
    forged = jwt.encode(
        claims(iss=sandbox.iss),
        ec.generate_private_key(ec.SECP384R1()),
        algorithm="ES384",
        headers={"kid": kid, "jku": jku, "typ": "JWT"},
    )
    # The shipped key was used (a signature check ran, and failed), and nothing was fetched.
    assert refused(verifier, bearer(forged)) == "bad signature"
    assert fetch.calls == []


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "no Authorization header"),
        ("", "no Authorization header"),
        ("Basic dXNlcjpwYXNz", "not a Bearer token"),
        ("Token abc.def.ghi", "not a Bearer token"),
        ("Bearer", "malformed token"),
        ("Bearer not-a-jwt", "malformed token"),
        ("Bearer a.b.c.d", "malformed token"),
        ("Bearer e30.e30.", "alg not allowed"),  # {} header
        ("Bearer !!!.e30.abc", "malformed token"),
    ],
)
def test_authorization_header_shape(verifier: JwtVerifier, header: str | None, reason: str) -> None:
    assert refused(verifier, header) == reason


def test_tenant(clock: Clock, fetch: FakeFetch, ec_key) -> None:
    issuer = TrustedIssuer(iss=ISS, jwks_url=JWKS_URL, tenant="org-42")
    verifier = make_verifier([issuer], fetch, clock)
    assert verifier.verify(bearer(sign(ec_key)(tenant="org-42")), AUD).tenant == "org-42"
    assert refused(verifier, bearer(sign(ec_key)(tenant="org-43"))) == "tenant mismatch"
    assert refused(verifier, bearer(sign(ec_key)())) == "tenant mismatch"


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud"])
def test_missing_required_claim(verifier: JwtVerifier, ec_key, claim: str) -> None:
    assert refused(verifier, bearer(sign(ec_key)(**{claim: None}))) == f"missing {claim}"


def test_missing_kid(verifier: JwtVerifier, ec_key) -> None:
    assert refused(verifier, bearer(sign(ec_key, kid=None)())) == "missing kid"


def test_typ_other_than_jwt(verifier: JwtVerifier, ec_key) -> None:
    assert refused(verifier, bearer(sign(ec_key, typ="at+jwt")())) == "typ not JWT"


def test_non_string_jti(verifier: JwtVerifier, ec_key) -> None:
    assert refused(verifier, bearer(sign(ec_key)(jti=12345))) == "invalid token (InvalidJTIError)"


def test_fhir_servers_of_an_issuer() -> None:
    issuer = TrustedIssuer(iss=ISS, jwks_url=JWKS_URL, fhir_servers=("https://ehr/fhir/",))
    assert issuer.allows_fhir_server("https://ehr/fhir")
    assert not issuer.allows_fhir_server("https://evil/fhir")


# ---------------------------------------------------------------------------------- replay store


@pytest.fixture
def two_stores(database_url: str) -> Iterator[tuple[Store, Store]]:
    """Two Store instances (two workers) sharing one database."""
    first, second = Store.from_url(database_url), Store.from_url(database_url)
    first.create_schema()
    second.create_schema()
    yield first, second
    first.dispose()
    second.dispose()


def store_replay(store: Store, clock: Clock) -> Callable[[str, str, datetime], bool]:
    return lambda iss, jti, until: store.remember_jti(iss, jti, until, clock())


def test_replay_refused_across_workers(
    two_stores: tuple[Store, Store], issuer: TrustedIssuer, clock: Clock, ec_key
) -> None:
    first, second = two_stores
    jwks = {JWKS_URL: {"keys": [public_jwk(ec_key, "ec-1")]}}
    worker_1 = make_verifier([issuer], FakeFetch(jwks), clock, store_replay(first, clock))
    worker_2 = make_verifier([issuer], FakeFetch(jwks), clock, store_replay(second, clock))
    token = sign(ec_key)()
    worker_1.verify(bearer(token), AUD)
    assert refused(worker_2, bearer(token)) == "replayed jti"
    assert refused(worker_1, bearer(token)) == "replayed jti"
    worker_2.verify(bearer(sign(ec_key)()), AUD)  # a fresh jti is fine


def test_remember_jti_semantics(two_stores: tuple[Store, Store]) -> None:
    store, other = two_stores
    until = NOW + timedelta(minutes=6)
    assert store.remember_jti(ISS, "j-1", until, NOW) is True
    assert other.remember_jti(ISS, "j-1", until, NOW) is False
    assert store.remember_jti("https://other.example.org", "j-1", until, NOW) is True
    # Once the first use could no longer be accepted, the same id may be used again.
    later = until + timedelta(seconds=1)
    assert other.remember_jti(ISS, "j-1", later + timedelta(minutes=5), later) is True
    assert store.remember_jti(ISS, "j-1", later + timedelta(minutes=5), later) is False


def test_remember_jti_keeps_only_hashes_and_sweeps(two_stores: tuple[Store, Store]) -> None:
    store, _ = two_stores
    for i in range(3):
        store.remember_jti(ISS, f"old-{i}", NOW + timedelta(minutes=1), NOW)
    with store.engine.connect() as conn:
        keys = conn.execute(select(seen_jtis.c.key)).scalars().all()
    assert len(keys) == 3
    assert all(len(k) == 64 and "old" not in k for k in keys)
    expected = hashlib.sha256(f"{ISS}\x1fold-0".encode()).hexdigest()
    assert expected in keys
    later = NOW + timedelta(minutes=10)
    assert store.remember_jti(ISS, "new", later + timedelta(minutes=5), later) is True
    with store.engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(seen_jtis)).scalar_one()
    assert left == 1


def test_remember_jti_race_has_one_winner(two_stores: tuple[Store, Store]) -> None:
    stores = two_stores
    until = NOW + timedelta(minutes=5)
    barrier = threading.Barrier(8)

    def attempt(i: int) -> bool:
        barrier.wait()
        return stores[i % 2].remember_jti(ISS, "contended", until, NOW)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert results.count(True) == 1


# ---------------------------------------------------------------------------------- issuers file


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def test_load_issuers(tmp_path: Path, ec_key, rsa_key) -> None:
    (tmp_path / "keys").mkdir()
    write_json(tmp_path / "keys" / "b.json", {"keys": [public_jwk(rsa_key, "rsa-1")]})
    path = write_json(
        tmp_path / "issuers.json",
        {
            "issuers": [
                {
                    "iss": ISS,
                    "jwks_url": JWKS_URL,
                    "allowed_jku": [JKU],
                    "fhir_servers": ["https://ehr.example.org/fhir"],
                    "tenant": "org-42",
                },
                {"iss": "https://b.example.org", "jwks_file": "keys/b.json"},
                {"iss": "https://c.example.org", "jwks": {"keys": [public_jwk(ec_key, "e")]}},
                {"iss": "https://dev.local", "jwks_url": "http://127.0.0.1:8081/jwks"},
            ]
        },
    )
    issuers = load_issuers(path)
    assert list(issuers) == [
        ISS,
        "https://b.example.org",
        "https://c.example.org",
        "https://dev.local",
    ]
    first = issuers[ISS]
    assert first.allowed_jku == (JKU,)
    assert first.fhir_servers == ("https://ehr.example.org/fhir",)
    assert first.tenant == "org-42"
    assert first.jwks is None
    assert issuers["https://b.example.org"].jwks["keys"][0]["kid"] == "rsa-1"
    assert issuers["https://c.example.org"].jwks_url is None
    # The loaded issuers work.
    verifier = JwtVerifier(issuers, replay=MemoryReplay(), fetch_jwks=FakeFetch(), clock=Clock())
    token = sign(rsa_key, "RS384", "rsa-1")(iss="https://b.example.org")
    assert verifier.verify(bearer(token), AUD).iss == "https://b.example.org"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ({"issuers": []}, "non-empty 'issuers'"),
        ([], "non-empty 'issuers'"),
        ({"issuers": ["x"]}, r"issuers\[0\] must be an object"),
        ({"issuers": [{"jwks_url": JWKS_URL}]}, "'iss' must be"),
        ({"issuers": [{"iss": ISS}]}, "needs a jwks_url or a static JWK Set"),
        ({"issuers": [{"iss": ISS, "jwks_uri": JWKS_URL}]}, "unknown field.*jwks_uri"),
        (
            {"issuers": [{"iss": ISS, "jwks_url": JWKS_URL}, {"iss": ISS, "jwks_url": JWKS_URL}]},
            r"issuers\[1\].*duplicate iss",
        ),
        ({"issuers": [{"iss": ISS, "jwks_url": "http://ehr.example.org/k"}]}, "must use https"),
        (
            {"issuers": [{"iss": ISS, "jwks_url": JWKS_URL, "allowed_jku": JKU}]},
            "'allowed_jku' must be an array",
        ),
        (
            {"issuers": [{"iss": ISS, "jwks_url": JWKS_URL, "allowed_jku": ["http://x.org/k"]}]},
            "allowed_jku entry .* must use https",
        ),
        ({"issuers": [{"iss": ISS, "jwks": {"keys": "no"}}]}, "'keys' array"),
        ({"issuers": [{"iss": ISS, "jwks": {"keys": [{"kty": "EC"}]}}]}, "string 'kid'"),
        (
            {"issuers": [{"iss": ISS, "jwks": {"keys": [{"kty": "oct", "kid": "s", "k": "c2"}]}}]},
            "private or symmetric",
        ),
        ({"issuers": [{"iss": ISS, "jwks_file": "missing.json"}]}, "cannot load jwks_file"),
        (
            {"issuers": [{"iss": ISS, "jwks_file": "a.json", "jwks": {"keys": []}}]},
            "not both",
        ),
        ({"issuers": [{"iss": ISS, "jwks_url": JWKS_URL, "tenant": 5}]}, "'tenant' must be"),
    ],
)
def test_load_issuers_errors(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "issuers.json"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        write_json(path, content)
    with pytest.raises(ValueError, match=message) as caught:
        load_issuers(path)
    assert str(path) in str(caught.value)


def test_load_issuers_private_key_in_jwks_file(tmp_path: Path, ec_key) -> None:
    private = ECAlgorithm.to_jwk(ec_key, as_dict=True) | {"kid": "e"}
    write_json(tmp_path / "k.json", {"keys": [private]})
    path = write_json(tmp_path / "i.json", {"issuers": [{"iss": ISS, "jwks_file": "k.json"}]})
    with pytest.raises(ValueError, match="private or symmetric"):
        load_issuers(path)


def test_load_issuers_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the trusted issuers file"):
        load_issuers(tmp_path / "absent.json")


# ---------------------------------------------------------------------------------- default fetch


def test_default_fetch_refuses_plain_http_off_loopback() -> None:
    with pytest.raises(ValueError, match="must use https"):
        fetch_jwks_https("http://ehr.example.org/jwks.json")


def test_default_fetch_over_loopback(ec_key, clock: Clock) -> None:
    jwks = json.dumps({"keys": [public_jwk(ec_key, "ec-1")]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        assert fetch_jwks_https(url)["keys"][0]["kid"] == "ec-1"
        verifier = JwtVerifier(
            {ISS: TrustedIssuer(iss=ISS, jwks_url=url)}, replay=MemoryReplay(), clock=clock
        )
        assert verifier.verify(bearer(sign(ec_key)()), AUD).iss == ISS
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
