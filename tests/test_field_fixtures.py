"""Field fixtures: patients written by hand from the shapes real EHRs send (Epic, Cerner / Oracle
Health, US Core as Synthea writes it, the CDS Hooks Sandbox, French hospital records), each run
in two modes against its expected outcome (fixtures/field/README.md):

(a) prefetch: the request as it is, through the Flask test client, with "now" at its `asOf`;
    its `fhirServer` (when it names one) is a loopback FHIR server holding the patient's
    resources, the Medications that exist only on the server and the pages behind `next` links;
(b) fetch: the same request without its prefetch, `fhirServer` pointing at that loopback
    server, which answers the service's prefetch queries generically (type, patient, code,
    status, _include; a paged search keeps its `next` link).

Both modes must give exactly the expected cards (rule, indicator, variant): every other rule the
service runs stays silent; `mentions` must appear in the named card's summary or detail (en;
`mentionsFr` in fr; "*" for any card). The service's own `data-not-read` card (an order that
could not be identified or read) is expected like any other. `recognised` lists the value sets
whose conditions the record must hold, for fixtures about reading a condition that now give no
card (a calcinosis with a complete work-up and no lesion feature, issue 12). The fixtures and
the loopback server are in tests/field_ehr.py; tests/test_golden_cards.py keeps their rendered
cards.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.fhir.record import Located
from cds_service.knowledge.chart import build_chart
from cds_service.rules import RULES, SERVICE_CARDS
from tests.conftest import NOW, ROOT, SERVICES, assert_valid_response, make_settings
from tests.fhir_stub import StubFhirServer
from tests.field_ehr import (
    CASES,
    EHRS,
    FIELD,
    REPEATS_SHOWN,
    anchor,
    field_names,
    field_stub,
    fixture_base,
    prepare,
)
from tests.helpers import TERMINOLOGY

ORIGINS = frozenset({"epic", "cerner", "uscore", "sandbox", "french"})
# Every shape issue 11 names, as tagged in the expected files ("shapes"); each must have a fixture.
SHAPES = frozenset(
    {
        # medicines
        "m-rxnorm-466588-no-display",
        "m-epic-local-code",
        "m-cerner-abbreviation",
        "m-name-abbreviation",
        "m-brand-maalox",
        "m-brand-mylanta",
        "m-brand-alternagel",
        "m-fr-maalox",
        "m-fr-xolaam",
        "m-fr-rocgel",
        "m-fr-gelox",
        "m-fr-phosphalugel",
        "m-sucralfate",
        "m-sandbox-243449",
        "m-rxnorm-product-code",
        "m-ref-contained",
        "m-ref-prefetch-include",
        "m-ref-server-only",
        "m-ref-display-only",
        "m-ref-unidentified",
        "m-ingredient-itemcodeableconcept",
        "m-atc-a02bx02",
        "m-atc-combination-alone",
        "m-unknown-brand",
        "m-colchicine-product",
        "m-fosamax-low-egfr",
        "m-diltiazem-brand",
        "m-warfarin-minocycline-brands",
        # beyond the issue's list: a brand is not a composition (no false critical)
        "m-brand-country-composition",
        "m-brand-no-aluminium",
        # laboratory results
        "l-creatinine-59826-8",
        "l-creatinine-77140-2",
        "l-calcium-2000-8",
        "l-calcium-corrected-29265-6",
        "l-phosphate-14879-1",
        "l-pth-pmol",
        "l-vitd-nmol",
        "l-egfr-string-lt15",
        "l-egfr-gt60",
        "l-egfr-gt90",
        "l-data-absent",
        "l-effective-period",
        "l-issued-only",
        # conditions, procedures, the patient
        "c-icd10cm-oid",
        "c-icd10-who-oid",
        "c-cim10-atih",
        "c-cim10-ans",
        "c-cim10-atih-oid",
        "c-snomed-term-suffix",
        "c-snomed-version-system",
        "c-ssc-remission",
        "c-limited-scleroderma",
        "c-sclerodermie-cutanee-limitee",
        "c-crest",
        "c-scs-abbreviation",
        "c-abatement-no-status",
        "c-dialysis-procedure-hd",
        "c-dialysis-procedure-pd",
        "c-dialysis-ended-abated",
        "c-dialysis-ended-transplant",
        "c-recent-egfr-vs-old-stage",
        "p-birthdate-year",
        "p-birthdate-year-month",
        "p-deceased-boolean",
        "p-deceased-datetime",
        # protocol leniency
        "x-category-object",
        "x-string-number",
        "x-invalid-resource",
        "x-next-link-server",
        "x-next-link-no-server",
        "x-procedures-key",
        # the Sandbox's own requests
        "s-patient-view",
        "s-rx-view",
        "s-rx-sign",
        # French hospital data
        "f-french-display",
        "f-french-drug-name",
        "f-creatinine-umol",
    }
)


RUNS = [
    pytest.param(hook, name, mode, lang, id=f"{hook}/{name}-{mode}-{lang}")
    for hook, name in CASES
    for mode, lang in (("prefetch", "en"), ("prefetch", "fr"), ("fetch", "en"))
]


CLOCK = {"now": NOW}


@pytest.fixture(scope="module")
def stub() -> Iterator[StubFhirServer]:
    with field_stub() as server:
        yield server


@pytest.fixture(scope="module")
def field_app(stub: StubFhirServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    settings = make_settings(
        tmp_path_factory.mktemp("field"),
        fhir_servers=(stub.base_url,),
        clock=lambda: CLOCK["now"],
        # Each fixture runs three times on this store.
        **REPEATS_SHOWN,
    )
    application = create_app(settings)
    yield application
    application.extensions["cds_engine"].close()


@pytest.fixture(scope="module")
def field_client(field_app: Flask) -> FlaskClient:
    return field_app.test_client()


# --------------------------------------------------------------------------- the checks


def _rule(card: dict[str, Any]) -> str:
    return card["source"]["topic"]["code"]


def _text(card: dict[str, Any]) -> str:
    return " ".join(f"{card.get('summary', '')} {card.get('detail', '')}".split()).casefold()


def _has(cards: list[dict[str, Any]], text: str) -> bool:
    wanted = " ".join(text.split()).casefold()
    return any(wanted in _text(c) for c in cards)


@pytest.mark.parametrize(("hook", "name", "mode", "lang"), RUNS)
def test_field_fixture(
    field_app: Flask,
    field_client: FlaskClient,
    stub: StubFhirServer,
    hook: str,
    name: str,
    mode: str,
    lang: str,
) -> None:
    ehr = EHRS[(hook, name)]
    expected = ehr.expected
    want_of = {**expected, **(expected.get("fetch", {}) if mode == "fetch" else {})}
    request = prepare(ehr, mode, fixture_base(stub, hook, name))
    CLOCK["now"] = anchor(ehr)
    stub.seen.clear()

    response = field_client.post(
        f"/cds-services/{SERVICES[hook]}", json=request, headers={"Accept-Language": lang}
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert_valid_response(body)
    cards = body["cards"]

    store = field_app.extensions["cds_engine"].store
    got = sorted((_rule(c), c["indicator"], store.issued(c["uuid"]).variant) for c in cards)
    want = sorted((c["rule"], c["indicator"], c["variant"]) for c in want_of["cards"])
    assert got == want  # exactly these: every other rule of the service stayed silent

    mentions = want_of.get("mentions" if lang == "en" else "mentionsFr", {})
    for rule, texts in mentions.items():
        pool = cards if rule == "*" else [c for c in cards if _rule(c) == rule]
        for text in texts:
            assert _has(pool, text), f"the {rule} card does not say {text!r}"

    if hook != "patient-view":  # a card about a draft names it and never updates it
        drafts = {
            f"MedicationRequest/{e['resource']['id']}"
            for e in request["context"]["draftOrders"]["entry"]
        }
        for card in (c for c in cards if _rule(c) in RULES):
            assert any(d in card["detail"] for d in drafts), "the card names the draft"
            actions = [a for s in card.get("suggestions", ()) for a in s["actions"]]
            assert not [a for a in actions if a["type"] == "update"], "drafts are not updated"

    prefix = f"/fhir/{hook}/{name}/"
    asked = [unquote(s.path.removeprefix(prefix)) for s in stub.seen if s.path.startswith(prefix)]
    if mode == "fetch":
        assert any(a.startswith(f"Patient/{request['context']['patientId']}") for a in asked)
    else:
        for path in expected.get("fetched", ()):
            assert any(a == path or a.startswith(path + "?") for a in asked), f"never read {path}"
    token = (request.get("fhirAuthorization") or {}).get("access_token")
    for seen in (s for s in stub.seen if s.path.startswith(prefix)):
        headers = {k.lower(): v for k, v in seen.headers.items()}
        if token:
            assert headers.get("authorization") == f"Bearer {token}"
        else:
            assert "authorization" not in headers


@pytest.mark.parametrize(
    ("hook", "name"), [case for case in CASES if "recognised" in EHRS[case].expected]
)
def test_field_fixture_conditions_are_recognised(hook: str, name: str) -> None:
    ehr = EHRS[(hook, name)]
    located = [Located(f"field[{i}]", r) for i, r in enumerate(ehr.everything.values())]
    record = build_chart(located, ehr.request["context"]["patientId"], TERMINOLOGY, anchor(ehr))
    for valueset in ehr.expected["recognised"]:
        assert record.conditions_in(valueset), f"{name}: no {valueset} condition recognised"


# --------------------------------------------------------------------------- the set itself


def test_there_are_at_least_45_field_fixtures_for_every_hook() -> None:
    assert len(CASES) >= 45
    for hook in SERVICES:
        assert len(field_names(hook)) >= 3, hook


def test_every_shape_of_the_issue_has_a_field_fixture() -> None:
    tagged = {s for ehr in EHRS.values() for s in ehr.expected["shapes"]}
    assert tagged <= SHAPES, f"unknown shape tags {sorted(tagged - SHAPES)}"
    assert tagged >= SHAPES, f"shapes without a fixture {sorted(SHAPES - tagged)}"
    assert {ehr.expected["ehr"] for ehr in EHRS.values()} >= ORIGINS


def test_field_expectations_name_only_rules_of_their_service() -> None:
    """The expected cards are rules the service runs; no list of silent rules is kept by hand
    (a new rule would otherwise mean editing every field fixture)."""
    services = {
        "patient-view": set(RULES),
        "order-select": {r for r in RULES if not r.startswith("calcinosis-")},
        "order-sign": {r for r in RULES if not r.startswith("calcinosis-")},
    }
    for (hook, name), ehr in EHRS.items():
        fired = [c["rule"] for c in ehr.expected["cards"] if c["rule"] not in SERVICE_CARDS]
        assert set(fired) <= services[hook], name
        assert "silent" not in ehr.expected, name
        assert ehr.expected["name"] == name
        date.fromisoformat(ehr.expected["asOf"])


def test_field_patients_are_distinct() -> None:
    patients = [ehr.request["context"]["patientId"] for ehr in EHRS.values()]
    assert len(patients) == len(set(patients))


def test_field_fixtures_live_apart_from_the_generated_ones() -> None:
    generated = {p.name for hook in SERVICES for p in (ROOT / "fixtures" / hook).glob("*.json")}
    field = {p.name for p in FIELD.rglob("*.json")}
    assert generated.isdisjoint(field)
    assert Path(FIELD / "README.md").exists()
