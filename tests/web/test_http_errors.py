"""Bad input gets a clear JSON error naming the field and the right status, never a 500 or an
HTML page, and nothing already stored is lost."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cds_service.app import create_app
from cds_service.store import issued_cards
from tests.conftest import SERVICE_URL, load_expected, load_request, make_settings

REQUEST = load_request("02-aluminium-egfr-22")


def issue(status: int, response: Any) -> dict[str, Any]:
    """The single OperationOutcome issue of an error response, after checking its shape."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert body["resourceType"] == "OperationOutcome"
    assert len(body["issue"]) == 1
    return body["issue"][0]


def issued_count(app: Flask) -> int:
    with app.extensions["cds_engine"].store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(issued_cards)).scalar_one()


def mutated(change: Any) -> dict[str, Any]:
    body = copy.deepcopy(REQUEST)
    change(body)
    return body


def test_malformed_json_is_400_with_position(shared_client: FlaskClient) -> None:
    response = shared_client.post(
        SERVICE_URL, data='{"hook": "patient-view",', content_type="application/json"
    )
    found = issue(400, response)
    assert found["expression"] == ["$"]
    assert "line 1" in found["diagnostics"]


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "null", '{"a": NaN}'])
def test_body_that_is_not_a_json_object_is_400(shared_client: FlaskClient, raw: str) -> None:
    issue(400, shared_client.post(SERVICE_URL, data=raw, content_type="application/json"))


def test_deeply_nested_json_is_400_not_500(shared_client: FlaskClient) -> None:
    raw = "[" * 100_000 + "]" * 100_000
    issue(400, shared_client.post(SERVICE_URL, data=raw, content_type="application/json"))


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda b: b.pop("hookInstance"), "hookInstance"),
        (lambda b: b["context"].pop("patientId"), "context.patientId"),
        (lambda b: b["context"].update(userId="nobody"), "context.userId"),
        (lambda b: b.update(fhirServer="ftp://ehr.example.org"), "fhirServer"),
        (lambda b: b["prefetch"].update(patient="Patient/1"), "prefetch.patient"),
        (
            lambda b: b.update(
                fhirServer="https://ehr.example.org/fhir",
                fhirAuthorization={"access_token": "x", "token_type": "Bearer"},
            ),
            "fhirAuthorization.expires_in",
        ),
    ],
    ids=[
        "no-hookInstance",
        "no-patientId",
        "bad-userId",
        "bad-fhirServer",
        "prefetch-string",
        "auth",
    ],
)
def test_schema_violation_is_400_naming_the_path(
    shared_client: FlaskClient, change: Any, path: str
) -> None:
    found = issue(400, shared_client.post(SERVICE_URL, json=mutated(change)))
    assert found["expression"] == [path]


def test_wrong_hook_for_the_service_is_400(shared_client: FlaskClient) -> None:
    found = issue(
        400, shared_client.post(SERVICE_URL, json=mutated(lambda b: b.update(hook="order-sign")))
    )
    assert found["expression"] == ["hook"]
    assert "patient-view" in found["diagnostics"]


def test_invalid_fhir_resource_the_rules_read_is_left_out_and_named(client: FlaskClient) -> None:
    def break_egfr(body: dict[str, Any]) -> None:
        entries = body["prefetch"]["observations"]["entry"]
        index = next(
            i
            for i, e in enumerate(entries)
            if e["resource"]["code"]["coding"][0]["code"] == "98979-8"
        )
        entries[index]["resource"]["valueQuantity"]["value"] = "twenty-two"
        body["_index"] = index

    body = mutated(break_egfr)
    body.pop("_index")
    response = client.post(SERVICE_URL, json=body)
    assert response.status_code == 200
    cards = {c["source"]["topic"]["code"]: c for c in response.json["cards"]}
    # Renal function is now unknown: the aluminium card falls to a warning and names the
    # result it could not read, with its field, never its value.
    aluminium = cards["aluminium-hydroxide-renal"]
    assert aluminium["indicator"] == "warning"
    assert "Not read: result (eGFR)" in aluminium["detail"]
    assert "field valueQuantity" in aluminium["detail"]
    assert "twenty-two" not in response.get_data(as_text=True)


def test_resource_of_another_patient_is_400(shared_client: FlaskClient) -> None:
    def other_patient(body: dict[str, Any]) -> None:
        body["prefetch"]["conditions"]["entry"][0]["resource"]["subject"]["reference"] = (
            "Patient/other"
        )

    found = issue(400, shared_client.post(SERVICE_URL, json=mutated(other_patient)))
    assert found["expression"] == ["prefetch.conditions.entry[0].resource.subject.reference"]


def test_patient_resource_with_another_id_is_400(shared_client: FlaskClient) -> None:
    found = issue(
        400,
        shared_client.post(
            SERVICE_URL, json=mutated(lambda b: b["prefetch"]["patient"].update(id="x"))
        ),
    )
    assert found["expression"] == ["prefetch.patient.id"]


def test_unknown_service_is_404(shared_client: FlaskClient) -> None:
    found = issue(404, shared_client.post("/cds-services/no-such-service", json=REQUEST))
    assert found["code"] == "not-found"


def test_unknown_route_is_json_404(shared_client: FlaskClient) -> None:
    issue(404, shared_client.get("/nothing-here"))


def test_wrong_method_is_json_405(shared_client: FlaskClient) -> None:
    issue(405, shared_client.get(SERVICE_URL))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_content_type_is_415(shared_client: FlaskClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    found = issue(415, shared_client.post(SERVICE_URL, data=b"{}", headers=headers))
    assert found["expression"] == ["header Content-Type"]


def test_fhir_json_content_type_is_accepted(client: FlaskClient) -> None:
    import json

    response = client.post(
        SERVICE_URL, data=json.dumps(REQUEST), content_type="application/fhir+json"
    )
    assert response.status_code == 200


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, max_body_bytes=4096))
    response = app.test_client().post(SERVICE_URL, json=REQUEST)
    found = issue(413, response)
    assert "4096" in found["diagnostics"]


def test_missing_prefetch_key_is_412_naming_it(shared_client: FlaskClient) -> None:
    found = issue(
        412,
        shared_client.post(SERVICE_URL, json=mutated(lambda b: b["prefetch"].pop("observations"))),
    )
    assert found["expression"] == ["prefetch.observations"]
    assert "observations" in found["diagnostics"]


def test_operation_outcome_prefetch_is_412(shared_client: FlaskClient) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    body = mutated(lambda b: b["prefetch"].update(medications=outcome))
    assert issue(412, shared_client.post(SERVICE_URL, json=body))["expression"] == [
        "prefetch.medications"
    ]


def test_no_prefetch_at_all_is_412_naming_every_key(shared_client: FlaskClient) -> None:
    found = issue(412, shared_client.post(SERVICE_URL, json=mutated(lambda b: b.pop("prefetch"))))
    assert found["expression"] == [
        "prefetch.patient, prefetch.conditions, prefetch.observations, prefetch.medications, "
        "prefetch.procedures"
    ]


def test_null_and_empty_prefetch_mean_no_data(client: FlaskClient) -> None:
    empty = {"resourceType": "Bundle", "type": "searchset", "total": 0}

    def no_data(body: dict[str, Any]) -> None:
        body["prefetch"].update(patient=None, conditions=empty, observations=None)

    response = client.post(SERVICE_URL, json=mutated(no_data))
    assert response.status_code == 200
    # Aluminium hydroxide is still active, and renal function is now unknown.
    assert [c["indicator"] for c in response.json["cards"]] == ["warning"]


def test_errors_store_nothing_and_lose_nothing(app: Flask, client: FlaskClient) -> None:
    assert client.post(SERVICE_URL, json=REQUEST).status_code == 200
    before = issued_count(app)
    assert before == len(load_expected("02-aluminium-egfr-22")["cards"])
    client.post(SERVICE_URL, data="{", content_type="application/json")
    client.post(SERVICE_URL, json=mutated(lambda b: b["prefetch"].pop("patient")))
    client.post(SERVICE_URL, json=mutated(lambda b: b.update(hook="order-select")))
    assert issued_count(app) == before


def test_nesting_beyond_the_limit_is_400(shared_client: FlaskClient) -> None:
    body = copy.deepcopy(REQUEST)
    deep: Any = "leaf"
    for _ in range(70):
        deep = {"a": deep}
    body["extension"] = {"nested": deep}
    found = issue(400, shared_client.post(SERVICE_URL, json=body))
    assert "deeper than 64" in found["diagnostics"]


def test_brackets_inside_strings_do_not_count_as_nesting(client: FlaskClient) -> None:
    body = copy.deepcopy(REQUEST)
    body["extension"] = {"note": "[" * 500 + "{" * 500}
    assert client.post(SERVICE_URL, json=body).status_code == 200


@pytest.mark.parametrize("path", ["/cds-services", SERVICE_URL, "/healthz", "/nope"])
def test_security_headers_on_every_response(shared_client: FlaskClient, path: str) -> None:
    response = shared_client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "python" not in response.headers.get("Server", "").lower()
