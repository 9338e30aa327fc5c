"""CDS Hooks protocol: discovery, prefetch templates, CORS, language negotiation, feedback."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.hooks.services import SERVICES_FILE
from cds_service.hooks.validation import violations
from tests.conftest import (
    SERVICE_URL,
    assert_valid_response,
    by_rule,
    load_request,
    make_settings,
)

FEEDBACK_URL = f"{SERVICE_URL}/feedback"
SANDBOX = "https://sandbox.cds-hooks.org"
# Search parameters of the spec's recommended prefetch subset used by our templates.
# The spec's recommended subset, plus `_include=MedicationRequest:medication` so that the
# Medications that orders reference come with them (issue 11).
ALLOWED_PARAMS = {"patient", "code", "status", "category", "date", "_count", "_sort", "_include"}


def test_discovery_lists_exactly_the_service_definitions(shared_client: FlaskClient) -> None:
    body = shared_client.get("/cds-services").json
    assert violations("discovery", body) == []
    defined = yaml.safe_load(SERVICES_FILE.read_text(encoding="utf-8"))
    assert [s["id"] for s in body["services"]] == [d["id"] for d in defined]
    service = body["services"][0]
    assert service["id"] == "calcinosis-patient-view"
    assert service["hook"] == "patient-view"
    assert service["title"]
    assert service["description"]
    assert set(service["prefetch"]) == {
        "patient",
        "conditions",
        "observations",
        "medications",
        "procedures",
    }
    # Internal fields never leak into discovery.
    assert "rules" not in service


def test_prefetch_templates_use_only_spec_tokens_and_the_recommended_subset(
    shared_client: FlaskClient,
) -> None:
    for template in shared_client.get("/cds-services").json["services"][0]["prefetch"].values():
        tokens = re.findall(r"\{\{(.*?)\}\}", template)
        assert set(tokens) == {"context.patientId"}, template
        if "?" not in template:
            assert re.fullmatch(r"[A-Z][A-Za-z]+/\{\{context\.patientId\}\}", template)
            continue
        resource, query = template.split("?", 1)
        assert re.fullmatch(r"[A-Z][A-Za-z]+", resource)
        params = [name for name, _ in parse_qsl(query)]
        assert set(params) <= ALLOWED_PARAMS, template
        assert all(":" not in name for name in params), "no search modifiers"


def test_observation_prefetch_asks_for_every_egfr_and_creatinine_code(
    shared_client: FlaskClient,
) -> None:
    template = shared_client.get("/cds-services").json["services"][0]["prefetch"]["observations"]
    codes = dict(parse_qsl(template.split("?", 1)[1]))["code"].split(",")
    for code in ("98979-8", "62238-1", "33914-3", "2160-0", "14682-9"):
        assert f"http://loinc.org|{code}" in codes


@pytest.mark.parametrize("path", ["/cds-services", SERVICE_URL, FEEDBACK_URL])
def test_cors_preflight_is_answered(shared_client: FlaskClient, path: str) -> None:
    response = shared_client.options(
        path,
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_cors_header_on_actual_responses(client: FlaskClient) -> None:
    response = client.post(
        SERVICE_URL, json=load_request("01-ssc-calcinosis"), headers={"Origin": SANDBOX}
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    error = client.post("/cds-services/nope", json={}, headers={"Origin": SANDBOX})
    assert error.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_restricted_to_configured_origins(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, cors_origins=("https://ehr.example.org",)))
    client = app.test_client()
    ok = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "Origin" in ok.headers["Vary"]
    other = client.get("/cds-services", headers={"Origin": "https://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fr-FR,fr;q=0.9,en;q=0.5", "fr"),
        ("fr-CA", "fr"),
        ("en-GB,en;q=0.8", "en"),
        ("de-DE,fr;q=0.3", "fr"),
        ("de-DE", "en"),  # unsupported -> the configured default
        (None, "en"),
    ],
)
def test_language_from_accept_language(
    client: FlaskClient, header: str | None, expected: str
) -> None:
    headers = {"Accept-Language": header} if header else {}
    response = client.post(SERVICE_URL, json=load_request("01-ssc-calcinosis"), headers=headers)
    assert response.headers["Content-Language"] == expected
    summary = response.json["cards"][0]["summary"]
    assert summary.startswith("Calcinose :" if expected == "fr" else "Calcinosis:")


def test_default_language_setting(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, default_language="fr"))
    response = app.test_client().post(SERVICE_URL, json=load_request("01-ssc-calcinosis"))
    assert response.headers["Content-Language"] == "fr"


def test_healthz(shared_client: FlaskClient) -> None:
    response = shared_client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_silent_patient_gets_empty_cards(shared_client: FlaskClient) -> None:
    response = shared_client.post(SERVICE_URL, json=load_request("10-healthy"))
    assert response.json == {"cards": []}
    assert_valid_response(response.json)


def test_feedback_is_stored_with_rule_and_knowledge_version(
    app: Flask, client: FlaskClient
) -> None:
    cards = client.post(SERVICE_URL, json=load_request("02-aluminium-egfr-22")).json["cards"]
    critical = by_rule(cards, "aluminium-hydroxide-renal")
    info = by_rule(cards, "calcinosis-synthesis")
    body = {
        "feedback": [
            {
                "card": critical["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": critical["overrideReasons"][1], "userComment": "x"},
                "outcomeTimestamp": "2026-11-23T13:05:00+01:00",
            },
            {
                "card": critical["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": critical["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": "2026-11-23T12:10:00Z",
            },
        ]
    }
    response = client.post(FEEDBACK_URL, json=body)
    assert response.status_code == 200
    assert response.json == {"stored": 2}
    stored = app.extensions["cds_engine"].store.feedback_for(critical["uuid"])
    assert [(f.rule_id, f.outcome, f.override_code) for f in stored] == [
        ("aluminium-hydroxide-renal", "overridden", "short-course-monitored"),
        ("aluminium-hydroxide-renal", "accepted", None),
    ]
    assert stored[0].knowledge_version == app.extensions["cds_engine"].knowledge_version
    assert stored[0].outcome_at.hour == 12  # stored in UTC
    assert app.extensions["cds_engine"].store.feedback_for(info["uuid"]) == []


def test_feedback_on_unknown_card_is_400_and_stores_nothing(
    app: Flask, client: FlaskClient
) -> None:
    cards = client.post(SERVICE_URL, json=load_request("02-aluminium-egfr-22")).json["cards"]
    body = {
        "feedback": [
            {
                "card": cards[0]["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-23T12:00:00Z",
            },
            {
                "card": "not-a-card",
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-23T12:00:00Z",
            },
        ]
    }
    response = client.post(FEEDBACK_URL, json=body)
    assert response.status_code == 400
    assert response.json["issue"][0]["expression"] == ["feedback[1].card"]
    assert app.extensions["cds_engine"].store.feedback_for(cards[0]["uuid"]) == []


def test_feedback_bad_body_and_unknown_service(shared_client: FlaskClient) -> None:
    bad = shared_client.post(FEEDBACK_URL, json={"feedback": [{"card": "x", "outcome": "ignored"}]})
    assert bad.status_code == 400
    assert bad.json["issue"][0]["expression"][0].startswith("feedback[0]")
    missing = shared_client.post("/cds-services/nope/feedback", json={"feedback": []})
    assert missing.status_code == 404
