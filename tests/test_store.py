"""Persistence: the issued-card log and feedback, on SQLite (default) and PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from cds_service.app import create_app
from cds_service.store import FeedbackEntry, IssuedCard, Store
from tests.conftest import SERVICE_URL, load_expected, load_request, make_settings

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def card(uuid: str) -> IssuedCard:
    return IssuedCard(uuid, "svc", "rule-a", "severe", "critical", "2026.11.0", "hook-1", T0)


def new_id() -> str:
    return str(uuid.uuid4())


def test_issued_cards_round_trip(database_url: str) -> None:
    store = Store.from_url(database_url)
    store.create_schema()
    first, second = new_id(), new_id()
    store.record_issued([card(first)])
    store.create_schema()  # idempotent: a restart never loses data
    store.record_issued([card(second)])
    assert store.issued(first) is not None
    got = store.issued(second)
    assert got is not None
    assert (got.rule_id, got.variant, got.knowledge_version) == ("rule-a", "severe", "2026.11.0")
    assert got.issued_at.replace(tzinfo=UTC) == T0 or got.issued_at == T0
    assert store.issued("nope") is None
    assert store.healthy()
    store.dispose()


def test_feedback_round_trip_and_atomicity(database_url: str) -> None:
    store = Store.from_url(database_url)
    store.create_schema()
    card_id = new_id()
    store.record_issued([card(card_id)])
    entry = FeedbackEntry(
        card_id, "svc", "rule-a", "2026.11.0", "overridden", None, "urn:x", "c", "d", T0, T0
    )
    store.record_feedback([entry])
    invalid = FeedbackEntry(**{**entry.__dict__, "outcome": None})
    with pytest.raises(IntegrityError):
        store.record_feedback([entry, invalid])  # the valid one must not be kept alone
    assert [f.override_code for f in store.feedback_for(card_id)] == ["c"]
    store.dispose()


def test_service_on_each_database_records_issued_cards(tmp_path: Path, database_url: str) -> None:
    app = create_app(make_settings(tmp_path, database_url=database_url))
    cards = (
        app.test_client().post(SERVICE_URL, json=load_request("02-aluminium-egfr-22")).json["cards"]
    )
    store = app.extensions["cds_engine"].store
    expected = load_expected("02-aluminium-egfr-22")["cards"]
    assert [store.issued(c["uuid"]).rule_id for c in cards] == [c["rule"] for c in expected]
    store.dispose()


def test_cards_are_returned_even_if_the_store_fails(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    store = app.extensions["cds_engine"].store

    def broken(_cards: object) -> None:
        raise RuntimeError("disk full")

    store.record_issued = broken  # type: ignore[method-assign]
    response = app.test_client().post(SERVICE_URL, json=load_request("02-aluminium-egfr-22"))
    assert response.status_code == 200
    assert len(response.json["cards"]) == len(load_expected("02-aluminium-egfr-22")["cards"])


def test_healthz_reports_an_unreachable_database(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    # A database file that cannot be opened (the path is a directory).
    app.extensions["cds_engine"].store.store = Store.from_url(f"sqlite:///{tmp_path}")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["checks"]["store"] == "unavailable"


def test_concurrent_schema_creation_is_tolerated(database_url: str) -> None:
    # Two gunicorn workers start together: each creates the schema; neither may fail.
    stores = [Store.from_url(database_url) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda s: s.create_schema(), stores))
    assert all(s.healthy() for s in stores)
    for s in stores:
        s.dispose()


def test_sqlite_commits_without_a_flush_of_their_own(tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL (issue 17): no fsync per commit; see README, Settings."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'cds.sqlite3'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.dispose()
