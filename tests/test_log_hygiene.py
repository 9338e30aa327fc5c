"""No patient data and no access token in the logs, even at DEBUG.

Representative fixture requests of the three services (between them every card, by rule and
variant, that the fixtures of the service give, and a silent answer) go through the app with
every log record captured at DEBUG: as sent; in French; without its prefetch, with a
`fhirServer` and a `fhirAuthorization` token, against a FHIR server that answers 401 (so the
app fetches, fails and logs why); with errors the service reports (a resource of another
patient, an invalid value, a wrong hook, a deep body); and with feedback (accepted, overridden
with a reason and a comment, on an unknown card). Then none of the strings that identify the
fixture patients (Patient.id, name, birthDate, identifier values; collected from every fixture
file) nor the token may appear in the captured text: one pattern, the alternation of them all,
searched once per record.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.observability import JsonFormatter, TextFormatter
from tests.conftest import (
    FIXTURE_ROOT,
    SERVICES,
    card_kinds,
    fhir_authorization,
    fixture_names,
    load_request,
    make_settings,
    representatives,
)
from tests.fhir_stub import StubFhirServer, fhir

TOKEN = "hygiene-access-token-9c41e7"
KEYS = ("patient", "conditions", "observations", "medications", "procedures")


# ----------------------------------------------------------------------------- patient data


def _patients(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("resourceType") == "Patient":
            yield node
        for value in node.values():
            yield from _patients(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patients(value)


def sensitive_strings() -> dict[str, set[str]]:
    """What identifies a fixture patient, read from every fixture request file, by kind."""
    found: dict[str, set[str]] = {"id": set(), "name": set(), "birthDate": set(), "mrn": set()}
    for path in sorted(FIXTURE_ROOT.glob("*/*.request.json")):
        request = json.loads(path.read_text(encoding="utf-8"))
        found["id"].add(request["context"]["patientId"])
        for patient in _patients(request):
            found["id"].add(patient["id"])
            found["birthDate"].add(patient["birthDate"])
            found["mrn"] |= {i["value"] for i in patient.get("identifier", ()) if "value" in i}
            for name in patient.get("name", ()):
                found["name"] |= {name.get("family"), name.get("text"), *name.get("given", ())}
    found["name"].discard(None)
    return found


SENSITIVE = sensitive_strings()


def _alternation(values: set[str]) -> str:
    # Longest first, so that a value is never cut short by another that is its prefix.
    return "|".join(re.escape(v) for v in sorted(values, key=lambda v: (-len(v), v)))


def leak_pattern() -> re.Pattern[str]:
    """One pattern for every sensitive string and the token, a named group per kind. Names and
    ids match as whole words (a given name "Marc" is not in "March", the patient id "fix-02" is
    not the resource id "fix-02-obs-1"); dates, identifier values and the token match anywhere."""
    kinds = [
        ("token", re.escape(TOKEN)),
        ("name", rf"(?<!\w)(?:{_alternation(SENSITIVE['name'])})(?!\w)"),
        ("id", rf"(?<![\w.-])(?:{_alternation(SENSITIVE['id'])})(?![\w.-])"),
        ("birthDate", _alternation(SENSITIVE["birthDate"])),
        ("mrn", _alternation(SENSITIVE["mrn"])),
    ]
    return re.compile("|".join(f"(?P<{kind}>{rx})" for kind, rx in kinds))


LEAK = leak_pattern()


def found(text: str) -> list[str]:
    """The leaks in `text`, as "<kind> '<string>'"."""
    return [f"{m.lastgroup} {m.group()!r}" for m in LEAK.finditer(text)]


def test_the_fixtures_hold_patient_data() -> None:
    """The check below looks for something: every fixture patient has all four kinds."""
    requests = sum(len(fixture_names(hook)) for hook in SERVICES)
    assert requests >= 30
    for kind, values in SENSITIVE.items():
        assert len(values) >= requests // 2, (kind, values)
    assert all(v.startswith("fix-") for v in SENSITIVE["id"])


def test_the_pattern_holds_every_sensitive_string() -> None:
    """The one pattern finds each sensitive string (and the token), whole, between spaces."""
    strings = {TOKEN}.union(*SENSITIVE.values())
    assert len(strings) > 200
    for value in sorted(strings):
        assert [m.group() for m in LEAK.finditer(f"seen {value} here")] == [value], value


def test_the_detector_finds_leaks() -> None:
    patient = next(_patients(load_request("02-aluminium-egfr-22")))
    name = patient["name"][0]
    for leak in (
        f"eGFR of {name['family']}",
        f"given={name['given'][0]}",
        f"born {patient['birthDate']}T00:00",
        f"mrn={patient['identifier'][0]['value']}",
        f"GET /fhir/Patient/{patient['id']}?x",
        f"Bearer {TOKEN}",
    ):
        assert found(leak), leak
    assert not found(f"Observation/{patient['id']}-obs-1 in March, hookInstance=abc")


# ----------------------------------------------------------------------------- the calls


# The fetch and error calls are made for every ERROR_PATH_STRIDE-th representative only.
ERROR_PATH_STRIDE = 4


def test_the_representatives_give_every_card_kind() -> None:
    for hook in SERVICES:
        chosen = representatives(hook)
        every = set().union(*(card_kinds(n, hook) for n in fixture_names(hook)))
        assert set().union(*(card_kinds(n, hook) for n in chosen)) == every, hook


def without_prefetch(body: dict[str, Any], server: str) -> dict[str, Any]:
    """The request with no prefetch, asking the app to fetch from `server` with TOKEN."""
    body = copy.deepcopy(body)
    body.pop("prefetch", None)
    body["fhirServer"] = server
    body["fhirAuthorization"] = fhir_authorization(TOKEN, patient=body["context"]["patientId"])
    return body


def resources(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = (body.get("prefetch") or {}).get(key)
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        return [e["resource"] for e in value.get("entry", ()) if isinstance(e, dict)]
    return [value]


def faulty_variants(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Requests the service rejects, where an error message could quote patient data."""
    variants = []
    patient = resources(body, "patient")
    if patient:
        other = copy.deepcopy(body)  # a Patient resource that is not the patient in context
        other["prefetch"]["patient"]["id"] = "someone-else"
        variants.append(other)
        bad_date = copy.deepcopy(body)  # an invalid birth date that still carries the real one
        bad_date["prefetch"]["patient"]["birthDate"] = patient[0]["birthDate"] + "-x"
        variants.append(bad_date)
        bad_name = copy.deepcopy(body)  # a name of the wrong type, with the real name in it
        bad_name["prefetch"]["patient"]["name"] = {"family": patient[0]["name"]}
        variants.append(bad_name)
    for key in ("conditions", "observations", "medications"):
        found = resources(body, key)
        if found:
            foreign = copy.deepcopy(body)  # a resource of another patient
            resources(foreign, key)[0]["subject"] = {"reference": "Patient/someone-else"}
            variants.append(foreign)
            bad_status = copy.deepcopy(body)  # a status of the wrong type (once a 500)
            resources(bad_status, key)[0]["status"] = {"patient": body["context"]["patientId"]}
            variants.append(bad_status)
    wrong_hook = copy.deepcopy(body)
    wrong_hook["hook"] = "order-dispatch"
    variants.append(wrong_hook)
    return variants


def feedback_calls(client: FlaskClient, sid: str, cards: list[dict[str, Any]]) -> None:
    for card in cards:
        item: dict[str, Any] = {"card": card["uuid"], "outcomeTimestamp": "2026-11-23T12:00:00Z"}
        suggestions = [s["uuid"] for s in card.get("suggestions", ()) if "uuid" in s]
        if suggestions:
            accepted = {
                **item,
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestions[0]}],
            }
            client.post(f"/cds-services/{sid}/feedback", json={"feedback": [accepted]})
        reason: dict[str, Any] = {"userComment": "patient declined"}
        if card.get("overrideReasons"):
            reason["reason"] = card["overrideReasons"][0]
        overridden = {**item, "outcome": "overridden", "overrideReason": reason}
        response = client.post(f"/cds-services/{sid}/feedback", json={"feedback": [overridden]})
        assert response.status_code == 200, response.get_json()
    unknown = {
        "card": "not-a-card",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T12:00:00Z",
    }
    assert (
        client.post(f"/cds-services/{sid}/feedback", json={"feedback": [unknown]}).status_code
        == 400
    )


@pytest.fixture
def unauthorized_fhir() -> Iterator[StubFhirServer]:
    """A FHIR server that answers 401 to every query."""
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "login", "diagnostics": "token rejected"}],
    }
    with StubFhirServer({"/fhir": lambda _path: fhir(outcome, 401)}) as stub:
        yield stub


def capture_everything(caplog: pytest.LogCaptureFixture, loggers: tuple[str, ...]) -> None:
    """Capture at DEBUG: the root logger (so every logger without a level of its own: the
    service's, SQLAlchemy's with its SQL and rows) and `loggers` whatever their level."""
    for name in ("", *loggers):
        caplog.set_level(logging.DEBUG, logger=name)


def formatted(record: logging.LogRecord) -> list[str]:
    """The record as pytest shows it and as the service writes it (LOG_FORMAT json and text,
    structured fields included); the JSON line decoded again, so that an escaped accent in a
    name cannot hide it."""
    line = JsonFormatter().format(record)
    decoded = json.dumps(json.loads(line), ensure_ascii=False)
    return [logging.Formatter().format(record), line, decoded, TextFormatter().format(record)]


def leaks_in_records(records: list[logging.LogRecord]) -> list[str]:
    """Each sensitive string a record holds (in any of its formats, traceback included)."""
    return [
        f"{what} in: {record.name} {record.levelname} {record.getMessage()[:300]!r}"
        for record in records
        for what in dict.fromkeys(found("\n".join(formatted(record))))
    ]


def leaks_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return leaks_in_records(caplog.records)


def test_the_detector_finds_leaks_in_structured_fields() -> None:
    """A patient name in a structured field is found, even where the JSON line escapes it."""
    name = sorted(n for n in SENSITIVE["name"] if not n.isascii())[0]
    record = logging.LogRecord("cds_service.x", logging.INFO, __file__, 1, "call", (), None)
    record.detail = f"seen {name} here"
    assert name not in JsonFormatter().format(record)  # escaped: "\u00e9" and the like
    assert leaks_in_records([record])
    assert not leaks_in_records(
        [logging.LogRecord("cds_service.x", logging.INFO, __file__, 1, "call", (), None)]
    )


@pytest.mark.parametrize("hook", list(SERVICES))
def test_no_patient_data_or_token_in_the_logs(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    unauthorized_fhir: StubFhirServer,
    hook: str,
) -> None:
    """Everything at DEBUG, httpx and httpcore included (whatever level create_app gives
    them; see also test_httpx_request_urls_never_reach_the_logs)."""
    sid = SERVICES[hook]
    app = create_app(
        make_settings(tmp_path, log_level="DEBUG", fhir_servers=(unauthorized_fhir.base_url,))
    )
    capture_everything(caplog, ("cds_service", "werkzeug", "sqlalchemy", "httpx", "httpcore"))
    client = app.test_client()
    statuses: dict[str, list[int]] = {"plain": [], "fetch": [], "faulty": []}
    shown: set[str] = set()  # the rules of the cards given
    chosen = representatives(hook)
    try:
        for i, name in enumerate(chosen):
            body = load_request(name, hook)
            url = f"/cds-services/{sid}"
            response = client.post(url, json=body)
            statuses["plain"].append(response.status_code)
            cards = response.get_json()["cards"]
            shown |= {c["source"]["topic"]["code"] for c in cards}
            client.post(url, json=body, headers={"Accept-Language": "fr"})
            feedback_calls(client, sid, cards)
            if i % ERROR_PATH_STRIDE:
                continue
            # The fetch and error paths do not depend on the cards: one patient in a few.
            fetched = client.post(url, json=without_prefetch(body, unauthorized_fhir.base_url))
            statuses["fetch"].append(fetched.status_code)
            statuses["faulty"] += [
                client.post(url, json=b).status_code for b in faulty_variants(body)
            ]
            client.post(url, data="[" * 80 + "]" * 80, content_type="application/json")
        client.get(f"/cds-services/{sid}/feedback/summary")
    finally:
        app.extensions["cds_engine"].close()

    # The calls did what they were meant to, and the capture saw them.
    assert set(statuses["plain"]) == {200}
    assert set(statuses["fetch"]) == {412}
    assert 400 in statuses["faulty"]
    assert shown == {rule for n in fixture_names(hook) for rule, _ in card_kinds(n, hook)} - {
        "silent"
    }
    assert len(unauthorized_fhir.seen) >= 4 * len(chosen[::ERROR_PATH_STRIDE])
    assert all(s.headers.get("Authorization") == f"Bearer {TOKEN}" for s in unauthorized_fhir.seen)
    text = caplog.text
    assert "FHIR fetch failed" in text
    # Each record is one JSON line; every hook call is logged with its service, status and
    # hookInstance (failed ones too, once the body could be read).
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert all("\n" not in line and json.loads(line)["level"] for line in lines)
    calls = [json.loads(line) for line in lines if json.loads(line)["message"] == "hook call"]
    assert {c["service"] for c in calls} == {sid}
    assert {c["status"] for c in calls} >= {200, 400, 412}
    assert all(c.get("hookInstance") for c in calls if c["status"] in (200, 412))
    assert any(c.get("error_path") for c in calls if c["status"] == 400)
    assert any(r.levelno == logging.DEBUG for r in caplog.records)

    leaks = leaks_in(caplog)
    assert not leaks, "\n".join(leaks[:20])


def test_httpx_request_urls_never_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, unauthorized_fhir: StubFhirServer
) -> None:
    app = create_app(
        make_settings(tmp_path, log_level="DEBUG", fhir_servers=(unauthorized_fhir.base_url,))
    )
    capture_everything(caplog, ("httpx", "httpcore"))
    try:
        body = without_prefetch(load_request("02-aluminium-egfr-22"), unauthorized_fhir.base_url)
        response = app.test_client().post(f"/cds-services/{SERVICES['patient-view']}", json=body)
    finally:
        app.extensions["cds_engine"].close()
    assert response.status_code == 412
    leaks = leaks_in(caplog)
    assert not leaks, "\n".join(leaks[:20])
