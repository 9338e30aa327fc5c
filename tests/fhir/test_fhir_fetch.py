"""Prefetch the way EHRs really send it, and fetching what is missing from the FHIR server."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds_service.fhir.client import FhirFetcher
from cds_service.fhir.prefetch import FetchPolicy
from tests.conftest import (
    SEKMET_TOKEN,
    SERVICE_URL,
    app_with,
    expected_indicators,
    fhir_authorization,
    load_request,
    representatives,
)
from tests.fhir_stub import StubFhirServer, bundle, fhir

TOKEN = "secret-access-token-5d1c"
REQUEST = load_request("02-aluminium-egfr-22")
PATIENT_ID = REQUEST["context"]["patientId"]
KEYS = ("patient", "conditions", "observations", "medications", "procedures")
EXPECTED_02 = expected_indicators("02-aluminium-egfr-22")  # with the full prefetch


def prefetched(key: str) -> dict[str, Any]:
    return copy.deepcopy(REQUEST["prefetch"][key])


def resources_of(key: str) -> list[dict[str, Any]]:
    value = prefetched(key)
    return (
        [e["resource"] for e in value.get("entry", [])]
        if value["resourceType"] == "Bundle"
        else [value]
    )


def ehr_routes() -> dict[str, Any]:
    """Stub routes answering our five prefetch queries with fixture 02's data."""
    return {
        f"/fhir/Patient/{PATIENT_ID}": lambda _p: fhir(prefetched("patient")),
        "/fhir/Condition?": lambda _p: fhir(bundle(resources_of("conditions"))),
        "/fhir/Observation?": lambda _p: fhir(bundle(resources_of("observations"))),
        "/fhir/MedicationRequest?": lambda _p: fhir(bundle(resources_of("medications"))),
        "/fhir/Procedure?": lambda _p: fhir(bundle(resources_of("procedures"))),
    }


def call(tmp_path: Path, stub: StubFhirServer, drop: tuple[str, ...], **settings: Any) -> Any:
    """POST fixture 02 without the `drop` keys, pointing at the stub FHIR server."""
    body = copy.deepcopy(REQUEST)
    for key in drop:
        body["prefetch"].pop(key)
    body["fhirServer"] = stub.base_url
    body["fhirAuthorization"] = fhir_authorization(TOKEN)
    return post(tmp_path, body, **{"fhir_servers": (stub.base_url,), **settings})


def post(tmp_path: Path, body: dict[str, Any], **settings: Any) -> Any:
    """POST `body` to an app built with `settings`, closed afterwards."""
    with app_with(tmp_path, **settings) as app:
        return app.test_client().post(SERVICE_URL, json=body)


def indicators(response: Any) -> list[str]:
    assert response.status_code == 200, response.json
    return [c["indicator"] for c in response.json["cards"]]


# --------------------------------------------------------------------------- the five cases


def test_missing_keys_are_fetched_with_the_bearer_token(tmp_path: Path) -> None:
    with StubFhirServer(ehr_routes()) as stub:
        response = call(tmp_path, stub, drop=KEYS)
    assert indicators(response) == EXPECTED_02
    assert len(stub.seen) == len(KEYS)
    for seen in stub.seen:
        assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
        assert seen.headers["Accept"] == "application/fhir+json"
    paths = sorted(s.path for s in stub.seen)
    assert paths[0].startswith("/fhir/Condition?patient=fix-02")
    assert any("_sort=-date" in p for p in paths)


def test_operation_outcome_key_is_fetched(tmp_path: Path) -> None:
    body_outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    with StubFhirServer(ehr_routes()) as stub:
        body = copy.deepcopy(REQUEST)
        body["prefetch"]["medications"] = body_outcome
        body["fhirServer"] = stub.base_url
        response = post(tmp_path, body, fhir_servers=(stub.base_url,))
    assert indicators(response) == EXPECTED_02
    assert [s.path.split("?")[0] for s in stub.seen] == ["/fhir/MedicationRequest"]
    assert "Authorization" not in stub.seen[0].headers  # no fhirAuthorization, no token


def test_null_and_empty_keys_are_not_fetched(tmp_path: Path) -> None:
    empty = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    with StubFhirServer(ehr_routes()) as stub:
        body = copy.deepcopy(REQUEST)
        body["prefetch"].update(conditions=empty, observations=None)
        body["fhirServer"] = stub.base_url
        response = post(tmp_path, body, fhir_servers=(stub.base_url,))
    assert indicators(response) == ["warning"]  # renal function now unknown; no SSc, no calcinosis
    assert stub.seen == []


def test_missing_key_without_fhir_server_is_412(tmp_path: Path) -> None:
    body = copy.deepcopy(REQUEST)
    body["prefetch"].pop("observations")
    response = post(tmp_path, body)
    assert response.status_code == 412
    assert "no fhirServer" in response.json["issue"][0]["diagnostics"]


def test_fhir_server_not_configured_is_412_and_nothing_is_sent(tmp_path: Path) -> None:
    with StubFhirServer(ehr_routes()) as stub:
        response = call(tmp_path, stub, drop=("observations",), fhir_servers=())
        other = call(
            tmp_path, stub, drop=("observations",), fhir_servers=("http://127.0.0.1:1/fhir",)
        )
    for r in (response, other):
        assert r.status_code == 412
        assert "CDS_FHIR_SERVERS" in r.json["issue"][0]["diagnostics"]
    assert stub.seen == []


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda _p: fhir({"resourceType": "OperationOutcome"}, 401), "HTTP 401"),
        (lambda _p: fhir({"resourceType": "OperationOutcome"}, 403), "HTTP 403"),
        (lambda _p: fhir({"resourceType": "OperationOutcome"}, 404), "HTTP 404"),
        (lambda _p: fhir({"resourceType": "OperationOutcome"}, 503), "HTTP 503"),
        (lambda _p: (200, "text/html", b"<html>login</html>"), "not FHIR JSON"),
        (lambda _p: fhir({"hello": "world"}), "not a FHIR resource"),
        (lambda _p: fhir({"resourceType": "OperationOutcome"}), "OperationOutcome"),
    ],
    ids=["401", "403", "404", "503", "html", "json-not-fhir", "outcome-200"],
)
def test_fhir_errors_become_412_with_a_clear_reason(
    tmp_path: Path, answer: Any, reason: str
) -> None:
    routes = {**ehr_routes(), "/fhir/Observation?": answer}
    with StubFhirServer(routes) as stub:
        response = call(tmp_path, stub, drop=KEYS)
    assert response.status_code == 412
    issue = response.json["issue"][0]
    assert issue["expression"] == ["prefetch.observations"]
    assert reason in issue["diagnostics"]
    assert TOKEN not in response.get_data(as_text=True)


def test_unreachable_fhir_server_is_412(tmp_path: Path) -> None:
    with StubFhirServer() as stub:
        base = stub.base_url
    body = copy.deepcopy(REQUEST)
    body["prefetch"].pop("patient")
    body["fhirServer"] = base
    response = post(tmp_path, body, fhir_servers=(base,))
    assert response.status_code == 412
    assert "connection failed" in response.json["issue"][0]["diagnostics"]


def test_slow_fhir_server_is_cut_at_the_deadline(tmp_path: Path) -> None:
    with StubFhirServer(ehr_routes(), delay_s=5.0) as stub:
        started = time.monotonic()
        response = call(
            tmp_path, stub, drop=("observations",), fhir_timeout_ms=2000, fhir_deadline_ms=300
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 412
    assert "deadline" in response.json["issue"][0]["diagnostics"]
    # Functional check that the deadline, not the 5 s server, ended the call.
    assert elapsed < 3.0


def test_queries_run_concurrently(tmp_path: Path) -> None:
    # Four queries of 0.4 s each fit a 1.0 s deadline only if they run at the same time.
    with StubFhirServer(ehr_routes(), delay_s=0.4) as stub:
        response = call(tmp_path, stub, drop=KEYS, fhir_timeout_ms=1000, fhir_deadline_ms=1000)
    assert indicators(response) == EXPECTED_02


# --------------------------------------------------------------------------- paging


def paged_routes(base: str) -> dict[str, Any]:
    meds = resources_of("medications")
    routes = ehr_routes()
    del routes["/fhir/MedicationRequest?"]  # replaced by three pages
    routes["/fhir/MedicationRequest?patient"] = lambda _p: fhir(
        bundle([], f"{base}/MedicationRequest?page=2")
    )
    routes["/fhir/MedicationRequest?page=2"] = lambda _p: fhir(
        bundle([], f"{base}/MedicationRequest?page=3")
    )
    routes["/fhir/MedicationRequest?page=3"] = lambda _p: fhir(bundle(meds))
    return routes


def test_next_links_are_followed(tmp_path: Path) -> None:
    with StubFhirServer() as stub:
        stub.routes.update(paged_routes(stub.base_url))
        response = call(tmp_path, stub, drop=("medications",))
    assert indicators(response) == EXPECTED_02  # the order was on page 3
    assert [s.path for s in stub.seen][-1] == "/fhir/MedicationRequest?page=3"
    assert all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in stub.seen)


def test_page_limit_stops_paging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with StubFhirServer() as stub:
        stub.routes.update(paged_routes(stub.base_url))
        with caplog.at_level(logging.WARNING):
            response = call(tmp_path, stub, drop=("medications",), fhir_page_limit=2)
    # Page 3, with the aluminium order, was not read: no critical card.
    assert indicators(response) == [i for i in EXPECTED_02 if i != "critical"]
    assert len(stub.seen) == 2
    assert "stopped at 2 pages: key=medications" in caplog.text


def test_next_link_to_another_host_is_refused(tmp_path: Path) -> None:
    with StubFhirServer() as elsewhere, StubFhirServer(ehr_routes()) as stub:
        stub.routes["/fhir/Condition?"] = lambda _p: fhir(
            bundle([], f"{elsewhere.base_url}/Condition?p=2")
        )
        response = call(tmp_path, stub, drop=("conditions",))
    assert response.status_code == 412
    assert "outside the FHIR server" in response.json["issue"][0]["diagnostics"]
    assert elsewhere.seen == []  # the token never left the EHR's server


def test_token_and_patient_id_never_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    routes = {
        **ehr_routes(),
        "/fhir/Condition?": lambda _p: fhir({"resourceType": "OperationOutcome"}, 401),
    }
    with caplog.at_level(logging.DEBUG), StubFhirServer(routes) as stub:
        call(tmp_path, stub, drop=KEYS)
        call(tmp_path, stub, drop=("observations",))
    assert caplog.text  # something was logged
    assert TOKEN not in caplog.text
    assert PATIENT_ID not in caplog.text


# --------------------------------------------------------------------------- a real FHIR server


# The patients that give every card kind (the prefetch path runs every fixture elsewhere).
@pytest.mark.parametrize("name", representatives())
def test_cards_from_the_fhir_server_equal_cards_from_prefetch(
    tmp_path: Path, sekmet: str, name: str
) -> None:
    body = load_request(name)
    body.pop("prefetch")
    body["fhirServer"] = sekmet
    body["fhirAuthorization"] = fhir_authorization(SEKMET_TOKEN)
    # Both calls on one store: cards that are shown once and then only when something changes
    # (standing interactions, yearly risk screening) must show on the second call too.
    quiet = {"quiet_standing_interactions": False, "risk_screening_interval_days": 0}
    with app_with(tmp_path, fhir_servers=(sekmet,), **quiet) as app:
        client = app.test_client()
        full = client.post(SERVICE_URL, json=load_request(name))
        fetched = client.post(SERVICE_URL, json=body)
    assert fetched.status_code == 200, fetched.json

    def essentials(response: Any) -> list[tuple[str, str, str]]:
        return [
            (c["source"]["topic"]["code"], c["indicator"], c["summary"])
            for c in response.json["cards"]
        ]

    assert essentials(fetched) == essentials(full)


def test_real_fhir_server_refuses_a_wrong_token(tmp_path: Path, sekmet: str) -> None:
    body = load_request("02-aluminium-egfr-22")
    body.pop("prefetch")
    body["fhirServer"] = sekmet
    body["fhirAuthorization"] = fhir_authorization("not-the-token")
    response = post(tmp_path, body, fhir_servers=(sekmet,))
    assert response.status_code == 412
    assert "HTTP 401" in response.json["issue"][0]["diagnostics"]


def test_paging_against_the_real_fhir_server(sekmet: str) -> None:
    # 45 eGFR results for one patient; the server's default page holds 20.
    auth = {"Authorization": f"Bearer {SEKMET_TOKEN}", "Content-Type": "application/fhir+json"}
    entries = [
        {
            "resource": {
                "resourceType": "Observation",
                "id": f"paging-egfr-{i}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "98979-8"}]},
                "subject": {"reference": "Patient/paging-1"},
                "effectiveDateTime": f"2026-{1 + i % 9:02d}-{1 + i % 27:02d}T08:00:00+00:00",
                "valueQuantity": {"value": 40 + i, "unit": "mL/min/{1.73_m2}"},
            },
            "request": {"method": "PUT", "url": f"Observation/paging-egfr-{i}"},
        }
        for i in range(45)
    ]
    loaded = httpx.post(
        sekmet,
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers=auth,
        timeout=30,
    )
    assert loaded.status_code == 200
    query = {"observations": "Observation?patient=paging-1&code=http://loinc.org|98979-8"}
    for limit, count, truncated in ((5, 45, []), (2, 40, ["observations"])):
        fetcher = FhirFetcher(2.0, 5.0, page_limit=limit)
        try:
            result = fetcher.fetch(sekmet, SEKMET_TOKEN, query)
        finally:
            fetcher.close()
        assert len(result.resources["observations"]) == count
        assert result.truncated == truncated


@pytest.mark.parametrize(
    ("server", "permitted"),
    [
        ("https://ehr.example.org/fhir", True),
        ("https://ehr.example.org/fhir/", True),
        ("https://ehr.example.org/fhir/tenant-a", True),
        ("https://ehr.example.org/fhirx", False),
        ("https://ehr.example.org.evil.example/fhir", False),
        ("http://ehr.example.org/fhir", False),
    ],
)
def test_fetch_policy_matches_whole_base_urls(server: str, permitted: bool) -> None:
    policy = FetchPolicy(None, ("https://ehr.example.org/fhir",))
    assert policy.permits(server) is permitted


def test_fetch_policy_can_require_https() -> None:
    policy = FetchPolicy(None, ("http://ehr.example.org/fhir",), require_https=True)
    assert not policy.permits("http://ehr.example.org/fhir")
