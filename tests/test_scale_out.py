"""Scale-out: two service processes behind one load balancer share everything through PostgreSQL.

Each test starts two real gunicorn processes (one worker each) on the same throw-away PostgreSQL
schema, with JWT authentication on and the same settings, as two containers behind a load
balancer would run. `CDS_PUBLIC_BASE_URL` is the load balancer's URL on both, so a token is valid
on either instance. The test talks to each instance directly over HTTP and shows that what one
instance remembers (JWT ids, issued cards and feedback, cautions shown at order-select, snoozes)
the other one knows: nothing that matters is kept in a process's memory.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import (
    ROOT,
    TEST_STORE_DEADLINE_MS,
    by_rule,
    free_port,
    load_request,
    wait_until_up,
)

pytestmark = pytest.mark.postgres

LOAD_BALANCER = "https://cds.example.org"  # the URL CDS clients call (the JWT audience)
ISS = "https://ehr.example.org"
KID = "scale-out-k1"
PATIENT_VIEW = "/cds-services/calcinosis-patient-view"
ORDER_SELECT = "/cds-services/calcinosis-order-select"
ORDER_SIGN = "/cds-services/calcinosis-order-sign"
START_DEADLINE_S = 60.0  # a deadline for start-up, not a performance assertion
# Settings the instances must not inherit from the environment running the tests.
INHERITED_OUT = ("DATABASE_URL", "LOG_LEVEL", "PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS")


@dataclass
class Instance:
    """One service process, reached directly (not through the load balancer)."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


def _environment(database_url: str, issuers: Path) -> dict[str, str]:
    """What both instances share: database, hash key, issuers, public URL, knowledge."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k not in INHERITED_OUT
    }
    env.update(
        DATABASE_URL=database_url,
        CDS_AUTH="jwt",
        CDS_TRUSTED_ISSUERS=str(issuers),
        CDS_PUBLIC_BASE_URL=LOAD_BALANCER,
        CDS_HASH_KEY="scale-out-test-hash-key-0123456789abcdef",
        LOG_LEVEL="WARNING",
        # A loaded test machine: a caution must be written, not skipped for a slow connection.
        CDS_STORE_DEADLINE_MS=str(TEST_STORE_DEADLINE_MS),
    )
    return env


def _start(name: str, env: dict[str, str], folder: Path) -> Instance:
    port = free_port()
    stderr = folder / f"{name}.stderr.log"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own service, fixed arguments
            # The image's entry point: gunicorn with the service's configuration.
            [sys.executable, "-m", "cds_service", "serve", "--port", str(port), "--workers", "1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    return Instance(name, f"http://127.0.0.1:{port}", process, stderr)


def _wait_healthy(instance: Instance) -> None:
    wait_until_up(f"{instance.url}/healthz", instance.process, instance.stderr, START_DEADLINE_S)


def _stop(instance: Instance) -> None:
    if instance.process.poll() is None:
        instance.process.terminate()
        try:
            instance.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            instance.process.kill()
            instance.process.wait()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def pair(
    postgres_url: str, tmp_path: Path, key: ec.EllipticCurvePrivateKey
) -> Iterator[tuple[Instance, Instance]]:
    """Instances A and B: two gunicorn processes started together on one empty schema."""
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    issuers = tmp_path / "trusted-issuers.json"
    issuers.write_text(
        json.dumps(
            {
                "issuers": [
                    {
                        "iss": ISS,
                        "jwks": {"keys": [{**public, "kid": KID, "alg": "ES384", "use": "sig"}]},
                    }
                ]
            }
        )
    )
    env = _environment(postgres_url, issuers)
    instances: list[Instance] = []
    try:
        for name in ("A", "B"):  # both start at once: concurrent schema creation
            instances.append(_start(name, env, tmp_path))
        for instance in instances:
            _wait_healthy(instance)
        yield instances[0], instances[1]
    finally:
        for instance in instances:
            _stop(instance)


def token(key: ec.EllipticCurvePrivateKey, path: str, jti: str | None = None) -> str:
    """A JWT from the trusted EHR for a call to `path` through the load balancer."""
    now = int(time.time())  # the instances run on the real clock
    claims = {
        "iss": ISS,
        "sub": "ehr-client",
        "aud": LOAD_BALANCER + path,
        "iat": now,
        "exp": now + 300,
        "jti": jti or str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})


def call(
    instance: Instance,
    path: str,
    key: ec.EllipticCurvePrivateKey,
    body: dict[str, Any] | None = None,
    bearer: str | None = None,
) -> httpx.Response:
    """GET (no body) or POST `body` to `path` on `instance`, with a fresh token unless given."""
    headers = {"Authorization": f"Bearer {bearer or token(key, path)}"}
    if body is None:
        return httpx.get(instance.url + path, headers=headers, timeout=30)
    return httpx.post(instance.url + path, json=body, headers=headers, timeout=30)


def cards(
    instance: Instance, path: str, key: ec.EllipticCurvePrivateKey, body: dict[str, Any]
) -> list[dict[str, Any]]:
    response = call(instance, path, key, body)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def rules(shown: list[dict[str, Any]]) -> list[str]:
    return [card["source"]["topic"]["code"] for card in shown]


def _utc_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- JWT replay


def test_a_token_accepted_by_one_instance_is_refused_by_the_other(
    pair: tuple[Instance, Instance], key: ec.EllipticCurvePrivateKey
) -> None:
    a, b = pair
    replayed = token(key, "/cds-services", jti=f"replay-{uuid.uuid4()}")
    assert call(a, "/cds-services", key, bearer=replayed).status_code == 200
    # B never saw this token, but A's acceptance is in the database: a replay.
    refused = call(b, "/cds-services", key, bearer=replayed)
    assert refused.status_code == 401
    assert refused.content == b""
    # The same call with a new jti (same issuer, key and audience) is accepted by B: only the
    # jti was refused.
    assert call(b, "/cds-services", key).status_code == 200


# --------------------------------------------------------------------------- feedback


def test_feedback_on_a_card_issued_by_one_instance_is_taken_by_the_other(
    pair: tuple[Instance, Instance], key: ec.EllipticCurvePrivateKey
) -> None:
    a, b = pair
    shown = cards(a, PATIENT_VIEW, key, load_request("01-ssc-calcinosis"))
    card = next(c for c in shown if c.get("suggestions"))
    accepted = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": _utc_now(),
            }
        ]
    }
    stored = call(b, f"{PATIENT_VIEW}/feedback", key, accepted)
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"stored": 1}
    # A card no instance issued is refused, by the same instance.
    unknown = copy.deepcopy(accepted)
    unknown["feedback"][0]["card"] = str(uuid.uuid4())
    refused = call(b, f"{PATIENT_VIEW}/feedback", key, unknown)
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == ["feedback[0].card"]
    # A, which issued the card, counts the feedback B received.
    summary = call(a, f"{PATIENT_VIEW}/feedback/summary", key)
    assert summary.status_code == 200
    per_rule = {r["rule"]: r for r in summary.json()["rules"]}
    assert per_rule[card["source"]["topic"]["code"]]["accepted"] == 1


# --------------------------------------------------------------------------- repeat suppression


def test_a_caution_shown_at_select_by_one_instance_is_not_repeated_at_sign_by_the_other(
    pair: tuple[Instance, Instance], key: ec.EllipticCurvePrivateKey
) -> None:
    a, b = pair
    select = load_request("21-select-aluminium-egfr-22", "order-select")
    sign = copy.deepcopy(select)  # the same draft order, now signed
    sign["hook"] = "order-sign"
    del sign["context"]["selections"]
    # Signed without a prior order-select, B shows the caution.
    assert rules(cards(b, ORDER_SIGN, key, sign)) == ["aluminium-hydroxide-renal"]
    # A shows it at order-select ...
    assert rules(cards(a, ORDER_SELECT, key, select)) == ["aluminium-hydroxide-renal"]
    # ... so B does not repeat it when the same order is signed.
    assert cards(b, ORDER_SIGN, key, sign) == []


# --------------------------------------------------------------------------- snooze


def test_an_override_received_by_one_instance_snoozes_the_card_on_the_other(
    pair: tuple[Instance, Instance], key: ec.EllipticCurvePrivateKey
) -> None:
    a, b = pair
    body = load_request("02-aluminium-egfr-22")
    shown = cards(a, PATIENT_VIEW, key, body)
    critical = by_rule(shown, "aluminium-hydroxide-renal")
    overridden = {
        "feedback": [
            {
                "card": critical["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": critical["overrideReasons"][0]},
                "outcomeTimestamp": _utc_now(),
            }
        ]
    }
    response = call(b, f"{PATIENT_VIEW}/feedback", key, overridden)
    assert response.status_code == 200, response.text
    # The same patient and evidence on A: the overridden card stays hidden, the others remain.
    again = cards(a, PATIENT_VIEW, key, body)
    assert rules(again) == [rule for rule in rules(shown) if rule != "aluminium-hydroxide-renal"]
