"""Field fixtures: patients written by hand from the shapes real EHRs send (Epic, Cerner / Oracle
Health, US Core as Synthea writes it, the CDS Hooks Sandbox, French hospital records), each run
in two modes against its expected outcome (fixtures/field/README.md):

(a) prefetch: the request as it is, through the Flask test client, with "now" at its `asOf`;
    its `fhirServer` (when it names one) is a loopback FHIR server holding the patient's
    resources, the Medications that exist only on the server and the pages behind `next` links;
(b) fetch: the same request without its prefetch, `fhirServer` pointing at that loopback
    server, which answers the service's prefetch queries generically (type, patient, code,
    status, _include; a paged search keeps its `next` link).

Both modes must give the same cards (rule, indicator, variant); rules listed as silent stay
silent; `mentions` must appear in the named card's summary or detail (en; `mentionsFr` in fr;
"*" for any card). The service's own `data-not-read` card (an order that could not be
identified or read) is expected like any other. `recognised` lists the value sets whose
conditions the record must hold, for fixtures about reading a condition that now give no card
(a calcinosis with a complete work-up and no lesion feature, issue 12).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.fhir.record import Located, build_record
from cds_service.rules import RULES, SERVICE_CARDS
from tests.conftest import NOW, ROOT, SERVICES, assert_valid_response, make_settings
from tests.fhir_stub import StubFhirServer, fhir
from tests.helpers import TERMINOLOGY

FIELD = ROOT / "fixtures" / "field"
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


def field_names(hook: str) -> list[str]:
    return sorted(
        p.name.removesuffix(".request.json") for p in (FIELD / hook).glob("*.request.json")
    )


def load(hook: str, name: str, kind: str) -> dict[str, Any]:
    return json.loads((FIELD / hook / f"{name}.{kind}.json").read_text(encoding="utf-8"))


CASES = [(hook, name) for hook in SERVICES for name in field_names(hook)]
RUNS = [
    pytest.param(hook, name, mode, lang, id=f"{hook}/{name}-{mode}-{lang}")
    for hook, name in CASES
    for mode, lang in (("prefetch", "en"), ("prefetch", "fr"), ("fetch", "en"))
]


# --------------------------------------------------------------------------- loopback FHIR server


def _rebase(value: Any, old: str | None, new: str) -> Any:
    """`value` with every occurrence of the EHR's base URL `old` replaced by `new`."""
    if not old:
        return copy.deepcopy(value)
    return json.loads(json.dumps(value).replace(old.rstrip("/"), new))


def _resources(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        return [
            e["resource"] for e in value.get("entry") or () if isinstance(e.get("resource"), dict)
        ]
    return [value]


def _next(bundle: dict[str, Any]) -> str | None:
    return next(
        (lk["url"] for lk in bundle.get("link") or () if lk.get("relation") == "next"), None
    )


def _refers_to(resource: dict[str, Any], patient: str) -> bool:
    if resource.get("resourceType") == "Patient":
        return resource.get("id") == patient
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and str(ref.get("reference", "")).endswith(f"Patient/{patient}"):
            return True
    return False


def _has_code(resource: dict[str, Any], tokens: list[str]) -> bool:
    codings = (resource.get("code") or {}).get("coding") or ()
    for token in tokens:
        system, _, code = token.rpartition("|")
        for c in codings:
            if c.get("code") == code and (not system or c.get("system") == system):
                return True
    return False


class FieldEhr:
    """What the EHR's FHIR server holds for one field fixture, and how it answers."""

    def __init__(self, hook: str, name: str) -> None:
        self.request = load(hook, name, "request")
        self.expected = load(hook, name, "expected")
        self.origin = self.request.get("fhirServer")  # the EHR base the fixture was written with
        self.pages: dict[str, dict[str, Any]] = self.expected.get("pages", {})
        on_pages = {
            (r["resourceType"], r["id"]) for page in self.pages.values() for r in _resources(page)
        }
        self.paged: dict[str, dict[str, Any]] = {}  # resource type -> page 1 of a paged search
        pool: dict[tuple[str, str], dict[str, Any]] = {}
        for value in (self.request.get("prefetch") or {}).values():
            link = (
                _next(value)
                if isinstance(value, dict) and value.get("resourceType") == "Bundle"
                else None
            )
            found = _resources(value)
            if link and self._relative(link) in self.pages and found:
                self.paged[found[0]["resourceType"]] = value
            for r in found:
                pool.setdefault((r["resourceType"], r["id"]), r)
        for r in self.expected.get("server", ()):
            pool.setdefault((r["resourceType"], r["id"]), r)
        self.pool = {k: v for k, v in pool.items() if k not in on_pages}
        self.everything = {
            **self.pool,
            **{
                (r["resourceType"], r["id"]): r
                for page in self.pages.values()
                for r in _resources(page)
            },
        }

    def _relative(self, url: str) -> str:
        base = (self.origin or "").rstrip("/") + "/"
        return url[len(base) :] if self.origin and url.startswith(base) else url

    def answer(self, rest: str, base: str) -> tuple[int, str, bytes]:
        """Answer `rest` (path and query below this fixture's base URL)."""
        for candidate in (rest, unquote(rest)):
            if candidate in self.pages:
                return fhir(_rebase(self.pages[candidate], self.origin, base))
        parts = urlsplit(rest)
        path = [p for p in parts.path.split("/") if p]
        if len(path) == 2:
            found = self.everything.get((path[0], path[1]))
            return fhir(found) if found else fhir({"resourceType": "OperationOutcome"}, 404)
        if len(path) != 1:
            return fhir({"resourceType": "OperationOutcome"}, 400)
        kind = path[0]
        if kind in self.paged:
            return fhir(_rebase(self.paged[kind], self.origin, base))
        query = {k: ",".join(v) for k, v in parse_qs(parts.query).items()}
        patient = query.get("patient") or query.get("subject", "").removeprefix("Patient/")
        found = [
            r
            for (rtype, _), r in self.pool.items()
            if rtype == kind
            and (not patient or _refers_to(r, patient))
            and ("code" not in query or _has_code(r, query["code"].split(",")))
            and ("status" not in query or r.get("status") in query["status"].split(","))
        ]
        included: list[dict[str, Any]] = []
        if "MedicationRequest:medication" in query.get("_include", ""):
            for r in found:
                ref = str((r.get("medicationReference") or {}).get("reference", ""))
                if ref.startswith("Medication/"):
                    med = self.everything.get(("Medication", ref.removeprefix("Medication/")))
                    if med is not None and med not in included:
                        included.append(med)
        entries = [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": mode},
            }
            for group, mode in ((found, "match"), (included, "include"))
            for r in group
        ]
        return fhir(
            {"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": entries}
        )


EHRS = {(hook, name): FieldEhr(hook, name) for hook, name in CASES}


def _route(path: str) -> tuple[int, str, bytes]:
    # /fhir/<hook>/<name>/<rest>
    _, _fhir, hook, name, *rest = path.split("/", 4)
    ehr = EHRS.get((hook, name))
    if ehr is None or not rest:
        return fhir({"resourceType": "OperationOutcome"}, 404)
    return ehr.answer(rest[0], f"{STUB_BASE[0]}/{hook}/{name}")


STUB_BASE: list[str] = []
CLOCK = {"now": NOW}


@pytest.fixture(scope="module")
def stub() -> Iterator[StubFhirServer]:
    with StubFhirServer({"/fhir/": _route}) as server:
        STUB_BASE[:] = [server.base_url]
        yield server


@pytest.fixture(scope="module")
def field_app(stub: StubFhirServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    settings = make_settings(
        tmp_path_factory.mktemp("field"),
        fhir_servers=(stub.base_url,),
        clock=lambda: CLOCK["now"],
        # Each fixture runs three times on this store: the risk-screening card's once-a-year
        # interval (tests/test_info_card.py) would hide it after the first run.
        risk_screening_interval_days=0,
        # ...and a standing interaction (tests/test_card_set.py) would be quiet after it too.
        quiet_standing_interactions=False,
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


def _prepare(ehr: FieldEhr, hook: str, name: str, mode: str, base: str) -> dict[str, Any]:
    request = _rebase(ehr.request, ehr.origin, base)
    if mode == "fetch":
        request.pop("prefetch", None)
        request["fhirServer"] = base
    return request


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
    base = f"{stub.base_url}/{hook}/{name}"
    request = _prepare(ehr, hook, name, mode, base)
    CLOCK["now"] = datetime.combine(date.fromisoformat(expected["asOf"]), time(12, 0), tzinfo=UTC)
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
    assert got == want
    assert {_rule(c) for c in cards}.isdisjoint(want_of["silent"]), "a silent rule fired"

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
    now = datetime.combine(date.fromisoformat(ehr.expected["asOf"]), time(12, 0), tzinfo=UTC)
    record = build_record(located, ehr.request["context"]["patientId"], TERMINOLOGY, now)
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


def test_field_expectations_cover_exactly_the_rules_of_their_service() -> None:
    services = {
        "patient-view": set(RULES),
        "order-select": {r for r in RULES if not r.startswith("calcinosis-")},
        "order-sign": {r for r in RULES if not r.startswith("calcinosis-")},
    }
    for (hook, name), ehr in EHRS.items():
        fired = [c["rule"] for c in ehr.expected["cards"] if c["rule"] not in SERVICE_CARDS]
        silent = ehr.expected["silent"]
        assert set(fired).isdisjoint(silent), name
        assert set(fired) | set(silent) == services[hook], name
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
