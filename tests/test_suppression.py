"""Repeat suppression (order-select -> order-sign), snooze after override, feedback summary.

Each scenario runs on SQLite and PostgreSQL, with two app instances sharing one store, the way
two workers or two instances would.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from cds_service.app import create_app
from cds_service.store import Store
from tests.conftest import (
    NOW,
    SERVICE_URL,
    by_rule,
    expected_indicators,
    load_request,
    make_settings,
)

SELECT_URL = "/cds-services/calcinosis-order-select"
SIGN_URL = "/cds-services/calcinosis-order-sign"


class Clock:
    """A settable clock shared by the app instances of a test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def workers(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[tuple[Flask, Flask]]:
    """Two app instances on one store (SQLite file or PostgreSQL schema)."""
    apps = tuple(
        create_app(make_settings(tmp_path, database_url=database_url, clock=clock))
        for _ in range(2)
    )
    yield apps  # type: ignore[misc]
    for app in apps:
        app.extensions["cds_engine"].close()


def order_request(
    hook: str, patient: str = "02-aluminium-egfr-22", **draft_changes: Any
) -> dict[str, Any]:
    """Fixture `patient` at an order hook, with one draft aluminium hydroxide order."""
    body = load_request(patient)
    active = body["prefetch"]["medications"]["entry"][0]["resource"]
    draft = {**copy.deepcopy(active), "id": "draft-alu", "status": "draft", **draft_changes}
    body["prefetch"]["medications"] = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    body["hook"] = hook
    body["context"]["userId"] = "Practitioner/example-clinician"
    body["context"]["encounterId"] = "enc-1"
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": draft}],
    }
    if hook == "order-select":
        body["context"]["selections"] = ["MedicationRequest/draft-alu"]
    return body


def cards(app: Flask, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = app.test_client().post(url, json=body)
    assert response.status_code == 200, response.json
    return response.json["cards"]


# --------------------------------------------------------------------------- repeat suppression


def test_caution_shown_at_select_is_not_repeated_at_sign(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    assert [c["indicator"] for c in cards(first, SELECT_URL, order_request("order-select"))] == [
        "critical"
    ]
    # Signed a minute later, on another worker: not repeated.
    assert cards(second, SIGN_URL, order_request("order-sign")) == []


def test_sign_without_select_shows_the_caution(workers: tuple[Flask, Flask]) -> None:
    assert len(cards(workers[0], SIGN_URL, order_request("order-sign"))) == 1


def test_changed_order_is_shown_again(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    cards(first, SELECT_URL, order_request("order-select"))
    changed = order_request("order-sign", dosageInstruction=[{"text": "30 mL twice a day"}])
    assert len(cards(second, SIGN_URL, changed)) == 1


def test_other_encounter_or_patient_is_shown_again(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    cards(first, SELECT_URL, order_request("order-select"))
    other_encounter = order_request("order-sign")
    other_encounter["context"]["encounterId"] = "enc-2"
    assert len(cards(second, SIGN_URL, other_encounter)) == 1
    other_patient = order_request("order-sign", patient="13-aluminium-dialysis")
    assert len(cards(second, SIGN_URL, other_patient)) == 1


def test_caution_is_repeated_after_the_window(workers: tuple[Flask, Flask], clock: Clock) -> None:
    first, second = workers
    cards(first, SELECT_URL, order_request("order-select"))
    clock.now = NOW + timedelta(minutes=59)
    assert cards(second, SIGN_URL, order_request("order-sign")) == []
    clock.now = NOW + timedelta(minutes=61)
    assert len(cards(second, SIGN_URL, order_request("order-sign"))) == 1


def test_store_keeps_no_patient_id(workers: tuple[Flask, Flask], database_url: str) -> None:
    cards(workers[0], SELECT_URL, order_request("order-select"))
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = [
            str(row)
            for table in ("shown_cautions", "issued_cards")
            for row in conn.execute(text(f"SELECT * FROM {table}"))  # noqa: S608 - fixed names
        ]
    engine.dispose()
    assert rows
    assert not any("fix-02" in row for row in rows)


# --------------------------------------------------------------------------- snooze


def override(app: Flask, card: dict[str, Any], url: str = SERVICE_URL) -> None:
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": card["overrideReasons"][0]},
                "outcomeTimestamp": NOW.isoformat(),
            }
        ]
    }
    response = app.test_client().post(f"{url}/feedback", json=body)
    assert response.status_code == 200, response.json


def test_overridden_card_is_snoozed_for_that_patient(
    workers: tuple[Flask, Flask], clock: Clock
) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    critical = by_rule(shown, "aluminium-hydroxide-renal")
    override(first, critical)
    # Same patient and evidence, another worker: the overridden card stays hidden.
    again = cards(second, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    assert [c["source"]["topic"]["code"] for c in again] == [
        c["source"]["topic"]["code"] for c in shown if c is not critical
    ]
    # Another patient with the same rule is not affected.
    other = cards(second, SERVICE_URL, load_request("13-aluminium-dialysis"))
    assert len(other) == len(expected_indicators("13-aluminium-dialysis"))
    # After the snooze period the card comes back.
    clock.now = NOW + timedelta(days=31)
    assert len(cards(second, SERVICE_URL, load_request("02-aluminium-egfr-22"))) == len(shown)


def test_snoozed_card_comes_back_when_the_evidence_changes(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    override(first, by_rule(shown, "aluminium-hydroxide-renal"))
    body = load_request("02-aluminium-egfr-22")
    for entry in body["prefetch"]["observations"]["entry"]:
        resource = entry["resource"]
        if resource["code"]["coding"][0]["code"] == "98979-8":
            resource["valueQuantity"]["value"] = 18  # a new, lower result
    again = cards(second, SERVICE_URL, body)
    assert [c["indicator"] for c in again] == [c["indicator"] for c in shown]


def test_accepted_cards_and_order_hook_overrides_do_not_snooze(
    workers: tuple[Flask, Flask],
) -> None:
    first, _ = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    critical = by_rule(shown, "aluminium-hydroxide-renal")
    accept = {
        "feedback": [
            {
                "card": critical["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": critical["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": NOW.isoformat(),
            }
        ]
    }
    assert first.test_client().post(f"{SERVICE_URL}/feedback", json=accept).status_code == 200
    assert len(cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))) == len(shown)
    signed = cards(first, SIGN_URL, order_request("order-sign"))[0]
    override(first, signed, SIGN_URL)
    assert len(cards(first, SIGN_URL, order_request("order-sign"))) == 1


# --------------------------------------------------------------------------- summary


def test_feedback_summary_per_rule(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    override(first, by_rule(shown, "aluminium-hydroxide-renal"))
    override(second, by_rule(shown, "calcinosis-context"))
    cards(first, SERVICE_URL, load_request("13-aluminium-dialysis"))
    summary = second.test_client().get(f"{SERVICE_URL}/feedback/summary").json
    assert summary["service"] == "calcinosis-patient-view"
    per_rule = {r["rule"]: r for r in summary["rules"]}
    aluminium = per_rule["aluminium-hydroxide-renal"]
    assert (aluminium["issued"], aluminium["accepted"], aluminium["overridden"]) == (2, 0, 1)
    assert aluminium["overrideReasons"] == [
        {
            "system": "urn:calcinosis-cds:override-reason",
            "code": "benefit-outweighs-risk",
            "display": "Benefit outweighs risk; renal function reviewed",
            "count": 1,
        }
    ]
    assert per_rule["calcinosis-context"]["overridden"] == 1
    assert aluminium["knowledgeVersion"] == first.extensions["cds_engine"].knowledge_version


def test_feedback_summary_of_unknown_service_is_404(client: Any) -> None:
    assert client.get("/cds-services/nope/feedback/summary").status_code == 404


# --------------------------------------------------------------------------- upgrade


def test_older_database_gains_the_new_columns_without_losing_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # the issued_cards table as version 0.1.0 created it
        conn.execute(
            text(
                "CREATE TABLE issued_cards (uuid VARCHAR(36) PRIMARY KEY, service_id VARCHAR(128) "
                "NOT NULL, rule_id VARCHAR(128) NOT NULL, variant VARCHAR(64) NOT NULL, indicator "
                "VARCHAR(16) NOT NULL, knowledge_version VARCHAR(32) NOT NULL, hook_instance "
                "VARCHAR(128) NOT NULL, issued_at DATETIME NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO issued_cards VALUES ('old-card', 's', 'r', 'v', 'info', '1', 'h', "
                "'2026-11-01 10:00:00')"
            )
        )
    engine.dispose()
    store = Store.from_url(url)
    store.create_schema()
    old = store.issued("old-card")
    assert old is not None
    assert old.subject_key is None
    store.dispose()


def test_malformed_feedback_loses_nothing_already_stored(workers: tuple[Flask, Flask]) -> None:
    first, second = workers
    shown = cards(first, SERVICE_URL, load_request("02-aluminium-egfr-22"))
    context = by_rule(shown, "calcinosis-context")
    aluminium = by_rule(shown, "aluminium-hydroxide-renal")
    override(first, context)
    store = first.extensions["cds_engine"].store
    before = store.feedback_for(context["uuid"])
    client = second.test_client()
    bad_bodies = [
        {"feedback": [{"card": context["uuid"], "outcome": "accepted", "outcomeTimestamp": "x"}]},
        {
            "feedback": [
                {
                    "card": aluminium["uuid"],
                    "outcome": "overridden",
                    "outcomeTimestamp": NOW.isoformat(),
                },
                {"card": "unknown", "outcome": "overridden", "outcomeTimestamp": NOW.isoformat()},
            ]
        },
        {"feedback": []},
    ]
    for bad in bad_bodies:
        assert client.post(f"{SERVICE_URL}/feedback", json=bad).status_code == 400
    assert (
        client.post(
            f"{SERVICE_URL}/feedback", data="{", content_type="application/json"
        ).status_code
        == 400
    )
    assert store.feedback_for(context["uuid"]) == before
    assert store.feedback_for(aluminium["uuid"]) == []  # the valid half of a bad body was not kept
    summary = client.get(f"{SERVICE_URL}/feedback/summary").json
    assert sum(r["overridden"] for r in summary["rules"]) == 1
