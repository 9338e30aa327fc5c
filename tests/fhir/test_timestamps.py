"""One reader of FHIR and RFC 3339 timestamps (`cds_service.fhir.coerce.parse_datetime`), for
the record's dates and the feedback's outcomeTimestamp."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.fhir.coerce import parse_datetime
from tests.conftest import SERVICE_URL, load_request

FEEDBACK_URL = f"{SERVICE_URL}/feedback"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-06", datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-15", datetime(2024, 6, 15, tzinfo=UTC)),
        ("2024-06-15T10:30:00Z", datetime(2024, 6, 15, 10, 30, tzinfo=UTC)),
        ("2024-06-15T12:30:00+02:00", datetime(2024, 6, 15, 10, 30, tzinfo=UTC)),
        ("2024-06-15T10:30:00.25Z", datetime(2024, 6, 15, 10, 30, 0, 250000, tzinfo=UTC)),
        ("2024-06-15T10:30:00", datetime(2024, 6, 15, 10, 30, tzinfo=UTC)),  # no zone: UTC
    ],
)
def test_fhir_dates_and_times_become_aware_utc(value: str, expected: datetime) -> None:
    parsed = parse_datetime(value)
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    "value", [None, "", 20240615, "2024-02-31", "2024-13", "soon", "2024-06-15T24:61:00Z"]
)
def test_what_is_not_a_date_is_none(value: object) -> None:
    assert parse_datetime(value) is None


def _critical_card(client: FlaskClient) -> str:
    cards = client.post(SERVICE_URL, json=load_request("02-aluminium-egfr-22")).json["cards"]
    return next(c["uuid"] for c in cards if c["indicator"] == "critical")


def test_feedback_timestamps_in_any_rfc_3339_spelling(app: Flask, client: FlaskClient) -> None:
    card = _critical_card(client)
    spellings = ["2026-11-23T13:05:00+01:00", "2026-11-23t12:05:00z", "2026-11-23T12:05:00.5Z"]
    body = {
        "feedback": [
            {"card": card, "outcome": "overridden", "outcomeTimestamp": when} for when in spellings
        ]
    }
    assert client.post(FEEDBACK_URL, json=body).status_code == 200
    stored = app.extensions["cds_engine"].store.feedback_for(card)
    # The first two spell the same instant: the same feedback, stored once (issue 15).
    assert [(f.outcome_at.hour, f.outcome_at.minute, f.outcome_at.microsecond) for f in stored] == [
        (12, 5, 0),
        (12, 5, 500_000),
    ]


def test_feedback_on_a_day_that_does_not_exist_is_400(app: Flask, client: FlaskClient) -> None:
    """The schema checks the shape of outcomeTimestamp, not the calendar: 31 February passes
    it, and is refused here naming its path (it used to be a 500)."""
    card = _critical_card(client)
    body = {
        "feedback": [
            {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"},
            {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-02-31T12:00:00Z"},
        ]
    }
    response = client.post(FEEDBACK_URL, json=body)
    assert response.status_code == 400
    assert response.json["issue"][0]["expression"] == ["feedback[1].outcomeTimestamp"]
    assert app.extensions["cds_engine"].store.feedback_for(card) == []
