"""Clinical answers never wait for the database (issue 15, point 1; cds_service/store_guard.py).

A store that blocks stands for a black-holed database: every test that calls the service while
it blocks would hang (until the test's own timeout) if a call waited for it. A store that fails
stands for a stopped one. Recovery is the blocked store released, or the failing one replaced.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from sqlalchemy.exc import OperationalError

from cds_service.errors import StoreUnavailable
from cds_service.migrate import head_revision
from cds_service.store import FeedbackEntry, IssuedCard, Store
from cds_service.store_guard import GuardedStore
from tests.conftest import NOW, SERVICE_URL, app_with, load_expected, load_request

FIXTURE = "02-aluminium-egfr-22"
FAST = {"store_deadline_ms": 50, "store_retry_seconds": 1}


class Blocking:
    """Store operations that wait until released (a database that does not answer)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute) or name in ("dispose", "create_schema"):
            return attribute

        def blocked(*args: Any, **kwargs: Any) -> Any:
            if not self.release.wait(timeout=30):
                raise OperationalError("blocked", {}, Exception("no answer"))
            return attribute(*args, **kwargs)

        return blocked


class Failing:
    """Store operations that fail at once (a database that is stopped)."""

    def __getattr__(self, name: str) -> Any:
        if name == "dispose":
            return lambda: None

        def failed(*_args: Any, **_kwargs: Any) -> Any:
            raise OperationalError("stopped", {}, ConnectionRefusedError())

        return failed


def guarded(app: Flask) -> GuardedStore:
    return app.extensions["cds_engine"].store


def call(app: Flask, name: str = FIXTURE, **headers: str) -> Any:
    return app.test_client().post(SERVICE_URL, json=load_request(name), headers=headers)


def feedback(card: str, at: str = "2026-11-23T12:00:00Z") -> dict[str, Any]:
    entry = {"card": card, "outcome": "overridden", "outcomeTimestamp": at}
    return {"feedback": [entry]}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    with app_with(tmp_path, **FAST) as application:
        yield application


def test_a_call_answers_with_its_cards_while_the_store_does_not_answer(app: Flask) -> None:
    store = guarded(app)
    blocking = Blocking(store.store)
    store.store = blocking  # type: ignore[assignment]
    try:
        response = call(app)
        assert response.status_code == 200
        expected = load_expected(FIXTURE)["cards"]
        assert len(response.json["cards"]) == len(expected)
        assert store.pending_count == len(expected)  # kept for the store
        # The next call does not wait either: the store is held down, nothing is tried.
        assert call(app).status_code == 200
    finally:
        blocking.release.set()


def test_cards_shown_during_an_outage_accept_feedback_once_the_store_is_back(
    app: Flask,
) -> None:
    store = guarded(app)
    real = store.store
    store.store = Failing()  # type: ignore[assignment]
    cards = call(app).json["cards"]
    assert cards
    assert store.pending_count == len(cards)

    # Feedback meanwhile: 503 with Retry-After, nothing stored.
    refused = app.test_client().post(f"{SERVICE_URL}/feedback", json=feedback(cards[0]["uuid"]))
    assert refused.status_code == 503, refused.json
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json["issue"][0]["code"] == "transient"

    store.store = real  # the database is back
    store._down_until = 0.0  # the retry delay has passed
    assert store.flush(timeout=10)
    assert real.issued(cards[0]["uuid"]) is not None
    accepted = app.test_client().post(f"{SERVICE_URL}/feedback", json=feedback(cards[0]["uuid"]))
    assert accepted.status_code == 200
    assert len(real.feedback_for(cards[0]["uuid"])) == 1


def test_the_buffer_of_issued_cards_is_bounded(tmp_path: Path) -> None:
    store = GuardedStore(Failing(), deadline=0.05, retry_after=60, buffer_limit=3)  # type: ignore[arg-type]
    dropped: list[str] = []
    store.on_fallback = dropped.append
    at = datetime(2026, 11, 23, tzinfo=UTC)
    cards = [IssuedCard(str(uuid.uuid4()), "s", "r", "v", "info", "k", "h", at) for _ in range(5)]
    store.record_issued(cards)
    assert store.pending_count == 3
    assert dropped.count("dropped") == 2
    assert store.issued(cards[-1].uuid) == cards[-1]  # the newest are kept
    with pytest.raises(StoreUnavailable):
        store.issued(cards[0].uuid)  # dropped, and the store is down: unknown, not "absent"


def test_a_worker_boots_and_answers_without_a_database(tmp_path: Path) -> None:
    # The database "file" is a directory: it cannot be opened.
    with app_with(tmp_path, database_url=f"sqlite:///{tmp_path}", **FAST) as application:
        client = application.test_client()
        assert client.get("/livez").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json["checks"]["store"] == "unavailable"
        assert call(application).status_code == 200
        assert guarded(application).pending_count > 0


def test_readiness_reports_a_read_only_database(tmp_path: Path) -> None:
    with app_with(tmp_path, **FAST) as application:
        client = application.test_client()
        ok = client.get("/readyz")
        assert ok.status_code == 200
        assert ok.json["checks"] == {
            "store": "ok",
            "schema": "ok",
            "schemaRevision": head_revision(),
            "pendingIssuedCards": 0,
        }
        read_only = Store.from_url(f"sqlite:///file:{tmp_path / 'cds.sqlite3'}?mode=ro&uri=true")
        guarded(application).store = read_only
        refused = client.get("/readyz")
        assert refused.status_code == 503
        assert refused.json["checks"]["store"].startswith("not writable")
        assert client.get("/healthz").json == refused.json  # the older name, the same answer


def test_the_same_feedback_twice_is_stored_once(database_url: str) -> None:
    store = Store.from_url(database_url)
    store.create_schema()
    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    card = IssuedCard(str(uuid.uuid4()), "s", "r", "v", "info", "k", "h", at)
    store.record_issued([card])

    def entry(outcome: str, minutes: int = 0) -> FeedbackEntry:
        when = at + timedelta(minutes=minutes)
        return FeedbackEntry(card.uuid, "s", "r", "k", outcome, None, None, None, None, when, at)

    assert store.record_feedback([entry("accepted"), entry("accepted")]) == [entry("accepted")]
    assert store.record_feedback([entry("accepted")]) == []  # a resend
    assert len(store.record_feedback([entry("accepted", 5), entry("overridden")])) == 2
    assert len(store.feedback_for(card.uuid)) == 3
    store.dispose()


# ----------------------------------------------------------------------------- JWT on


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


BASE = "https://cds.example.org"
ISS = "https://ehr.example.org"


def bearer(key: ec.EllipticCurvePrivateKey, jti: str) -> str:
    now = int(NOW.timestamp())
    claims = {"iss": ISS, "sub": "ehr", "aud": BASE + SERVICE_URL, "iat": now, "exp": now + 300}
    token = jwt.encode({**claims, "jti": jti}, key, algorithm="ES384", headers={"kid": "k1"})
    return f"Bearer {token}"


def test_with_jwt_on_and_the_store_down_calls_answer_and_replays_are_still_refused(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    issuers = {
        "issuers": [{"iss": ISS, "jwks": {"keys": [{**public, "kid": "k1", "alg": "ES384"}]}}]
    }
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(issuers))
    settings: dict[str, Any] = {
        "auth": "jwt",
        "trusted_issuers_file": path,
        "public_base_url": BASE,
    }
    with app_with(tmp_path, **settings, **FAST) as application:
        guarded(application).store = Failing()  # type: ignore[assignment]
        fallbacks: list[str] = []
        guarded(application).on_fallback = fallbacks.append
        token = bearer(key, str(uuid.uuid4()))
        first = call(application, Authorization=token)
        assert first.status_code == 200
        assert first.json["cards"]
        assert call(application, Authorization=token).status_code == 401  # the replay
        assert call(application, Authorization=bearer(key, str(uuid.uuid4()))).status_code == 200
        assert fallbacks.count("jti") == 3  # every fallback counted...
        assert caplog.text.count("replay check in this process's memory") == 1  # ...said once


def test_a_slow_operation_holds_no_more_than_the_pool(tmp_path: Path) -> None:
    blocking = Blocking(Store.from_url(f"sqlite:///{tmp_path / 'x.sqlite3'}"))
    store = GuardedStore(blocking, deadline=0.02, retry_after=0.0)  # type: ignore[arg-type]
    try:
        calls: list[Callable[[], Any]] = [lambda: store.caution("k") for _ in range(8)]
        for each in calls:
            with pytest.raises(StoreUnavailable):
                each()
    finally:
        blocking.release.set()
