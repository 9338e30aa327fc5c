"""What the prefetch points to but does not hold (issue 11): Medications that orders reference,
the pages behind a searchset's next link; and resources that are not valid R4, which are left
out and named on a card instead of sinking the call."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tests.conftest import SERVICES, app_with, by_rule, fhir_authorization, load_request
from tests.fhir_stub import StubFhirServer, bundle, fhir

TOKEN = "secret-access-token-0b7e"
REQUEST = load_request("02-aluminium-egfr-22")
PATIENT_ID = REQUEST["context"]["patientId"]
ALUMINIUM = "aluminium-hydroxide-renal"
MEDICATION = {
    "resourceType": "Medication",
    "id": "med-al",
    "code": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "612"}],
    },
}


def with_order(order: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    """Fixture 02 (eGFR 22) with `order` (and `extra` entries) as its only medications."""
    body = copy.deepcopy(REQUEST)
    body["prefetch"]["medications"] = bundle([order, *extra])
    return body


def order(**medication: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "mr-1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        **medication,
    }


def post(tmp_path: Path, body: dict[str, Any], hook: str = "patient-view", **settings: Any) -> Any:
    with app_with(tmp_path, **settings) as app:
        response = app.test_client().post(f"/cds-services/{SERVICES[hook]}", json=body)
    assert response.status_code == 200, response.json
    return response.json["cards"]


def rules_of(cards: list[dict[str, Any]]) -> dict[str, str]:
    return {c["source"]["topic"]["code"]: c["indicator"] for c in cards}


def on_server(stub: StubFhirServer, body: dict[str, Any]) -> dict[str, Any]:
    body["fhirServer"] = stub.base_url
    body["fhirAuthorization"] = fhir_authorization(TOKEN)
    return body


# --------------------------------------------------------------------------- Medication references


def test_a_contained_medication_is_read(tmp_path: Path) -> None:
    request = order(
        medicationReference={"reference": "#m"},
        contained=[{**MEDICATION, "id": "m"}],
    )
    assert rules_of(post(tmp_path, with_order(request)))[ALUMINIUM] == "critical"


def test_an_included_medication_is_read(tmp_path: Path) -> None:
    body = with_order(order(medicationReference={"reference": "Medication/med-al"}), MEDICATION)
    body["prefetch"]["medications"]["entry"][1]["search"] = {"mode": "include"}
    assert rules_of(post(tmp_path, body))[ALUMINIUM] == "critical"


def test_a_medication_only_on_the_fhir_server_is_fetched_with_the_token(tmp_path: Path) -> None:
    routes = {"/fhir/Medication/med-al": lambda _p: fhir(MEDICATION)}
    with StubFhirServer(routes) as stub:
        body = on_server(
            stub, with_order(order(medicationReference={"reference": "Medication/med-al"}))
        )
        cards = post(tmp_path, body, fhir_servers=(stub.base_url,))
    assert rules_of(cards)[ALUMINIUM] == "critical"
    assert [s.path for s in stub.seen] == ["/fhir/Medication/med-al"]
    assert stub.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_an_unfetchable_medication_falls_back_on_its_display(tmp_path: Path) -> None:
    reference = {"reference": "Medication/gone", "display": "Aluminium hydroxide 64 mg/mL"}
    with StubFhirServer({}) as stub:  # answers 404
        body = on_server(stub, with_order(order(medicationReference=reference)))
        cards = post(tmp_path, body, fhir_servers=(stub.base_url,))
    assert rules_of(cards)[ALUMINIUM] == "critical"


def test_an_order_that_names_nothing_is_said_to_be_unidentified(tmp_path: Path) -> None:
    cards = post(tmp_path, with_order(order(medicationReference={"reference": "Medication/x"})))
    card = by_rule(cards, "data-not-read")
    assert card["indicator"] == "info"
    assert card["summary"].startswith("1 medication order could not be identified (")
    assert "MedicationRequest/mr-1" in card["summary"]
    assert ALUMINIUM not in rules_of(cards)


def test_a_medication_is_not_fetched_from_a_server_that_is_not_allowed(tmp_path: Path) -> None:
    with StubFhirServer({"/fhir/Medication/": lambda _p: fhir(MEDICATION)}) as stub:
        body = on_server(
            stub, with_order(order(medicationReference={"reference": "Medication/med-al"}))
        )
        cards = post(tmp_path, body, fhir_servers=())
    assert stub.seen == []
    assert "data-not-read" in rules_of(cards)


# --------------------------------------------------------------------------- next pages


def paged(next_url: str) -> dict[str, Any]:
    """Fixture 02 whose conditions and medications are on page 2 of their searches."""
    body = copy.deepcopy(REQUEST)
    for key in ("conditions", "medications"):
        body["prefetch"][key] = bundle([], next_url=f"{next_url}/{key}-page-2")
        body["prefetch"][key]["entry"] = []
    return body


def page_two(key: str) -> dict[str, Any]:
    return bundle([e["resource"] for e in REQUEST["prefetch"][key]["entry"]])


def test_next_pages_of_a_prefetched_search_are_followed(tmp_path: Path) -> None:
    with StubFhirServer(
        {
            "/fhir/conditions-page-2": lambda _p: fhir(page_two("conditions")),
            "/fhir/medications-page-2": lambda _p: fhir(page_two("medications")),
        }
    ) as stub:
        body = on_server(stub, paged(stub.base_url))
        cards = post(tmp_path, body, fhir_servers=(stub.base_url,))
    found = rules_of(cards)
    assert found[ALUMINIUM] == "critical"
    assert found["calcinosis-synthesis"] == "info"
    assert "data-not-read" not in found
    assert sorted(s.path for s in stub.seen) == [
        "/fhir/conditions-page-2",
        "/fhir/medications-page-2",
    ]


def test_without_fhir_server_the_cards_say_the_data_may_be_incomplete(tmp_path: Path) -> None:
    body = paged("https://ehr.example.org/fhir")
    body["prefetch"]["conditions"] = REQUEST["prefetch"]["conditions"]  # only one key paged
    cards = post(tmp_path, body)
    assert set(rules_of(cards)) >= {"calcinosis-synthesis", "calcinosis-type"}
    for card in cards:
        assert "Possibly incomplete: the “medications” search had more results" in card["detail"]
        assert "no FHIR server to fetch them from" in card["detail"]


def test_an_unfollowed_page_and_no_card_give_the_data_not_read_card(tmp_path: Path) -> None:
    body = paged("https://ehr.example.org/fhir")
    cards = post(tmp_path, body)
    assert list(rules_of(cards)) == ["data-not-read"]
    assert "record items could not be read or may be incomplete" in cards[0]["summary"]


def test_a_next_link_to_another_server_gets_no_token(tmp_path: Path) -> None:
    with StubFhirServer({}) as stub:
        body = on_server(stub, paged("https://elsewhere.example.org/fhir"))
        cards = post(tmp_path, body, fhir_servers=(stub.base_url,))
    assert stub.seen == []
    assert "data-not-read" in rules_of(cards)
    assert "outside the FHIR server" in by_rule(cards, "data-not-read")["detail"]


# --------------------------------------------------------------------------- lenient with data


def test_an_order_that_is_not_valid_r4_is_left_out_and_named(tmp_path: Path) -> None:
    broken = order(
        medicationCodeableConcept=MEDICATION["code"],
        dosageInstruction=[{"doseAndRate": "twice"}],
        id="abc",
    )
    cards = post(tmp_path, with_order(broken))
    found = rules_of(cards)
    assert ALUMINIUM not in found
    assert found["calcinosis-synthesis"] == "info"  # the other cards are still there
    card = by_rule(cards, "data-not-read")
    assert card["summary"] == (
        "1 medication order could not be read (MedicationRequest/abc, field "
        "dosageInstruction): check in the chart"
    )
    assert "twice" not in str(cards)


def test_the_sandbox_s_single_category_object_is_coerced(tmp_path: Path) -> None:
    body = copy.deepcopy(load_request("21-select-aluminium-egfr-22", "order-select"))
    for entry in body["context"]["draftOrders"]["entry"]:
        entry["resource"]["category"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                    "code": "outpatient",
                }
            ]
        }
    cards = post(tmp_path, body, hook="order-select")
    assert rules_of(cards) == {ALUMINIUM: "critical"}


def test_an_order_with_no_medication_at_all_is_said_to_be_unidentified(tmp_path: Path) -> None:
    for empty in ({}, {"medicationCodeableConcept": {"coding": [{"system": "urn:x"}]}}):
        card = by_rule(post(tmp_path, with_order(order(**empty))), "data-not-read")
        assert (
            "1 medication order could not be identified (MedicationRequest/mr-1)"
            in (card["summary"])
        )
