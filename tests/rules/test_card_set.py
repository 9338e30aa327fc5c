"""The card set, treatment-safety half (issue 12, point 2): one safety card per order, at the
highest severity of its findings, and interaction cautions between two active drugs kept quiet
at patient-view unless critical or changed (cds_service/rules/card_set.py, suppression.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import rules
from cds_service.app import create_app
from cds_service.cards import CardLibrary, Renderer
from cds_service.devtools.hookrequest import build_request
from cds_service.fhir.record import Located
from cds_service.hooks.services import load_services
from cds_service.knowledge.chart import Chart, build_chart
from cds_service.rules import card_set
from cds_service.rules.base import Finding
from cds_service.settings import DEFAULT_CARDS_DIR, Settings
from cds_service.suppression import canonical, evidence_fingerprint
from tests import helpers as h
from tests.conftest import NOW, fixture_names, load_expected, load_request, make_settings

RENDERER = Renderer(CardLibrary(DEFAULT_CARDS_DIR, h.TERMINOLOGY))
SERVICES = load_services(h.TERMINOLOGY)
PATIENT_VIEW = SERVICES["calcinosis-patient-view"]
ORDER_SIGN = SERVICES["calcinosis-order-sign"]
SAFETY = ORDER_SIGN.rules
INTERACTIONS = card_set.interaction_rules()

# RxNorm ingredient codes (the value sets' own IN codes); SNOMED reflux.
COLCHICINE, CLARITHROMYCIN, DILTIAZEM, ALENDRONATE = "2683", "21212", "3443", "46041"
REFLUX = "235595009"


def systolic(value: float, days_ago: float = 1) -> dict[str, Any]:
    return h.observation("8480-6", value, "mm[Hg]", days_ago, "bp")


def draft(code: str, rid: str) -> dict[str, Any]:
    return {**h.drug(code, rid=rid), "status": "draft", "authoredOn": NOW.date().isoformat()}


def with_drafts(resources: list[dict[str, Any]], drafts: list[dict[str, Any]]) -> Chart:
    located = [Located(f"prefetch.test.entry[{i}].resource", r) for i, r in enumerate(resources)]
    orders = [Located(f"context.draftOrders.entry[{i}].resource", d) for i, d in enumerate(drafts)]
    return build_chart(located, h.PID, h.TERMINOLOGY, NOW, orders or None)


def composed(record: Chart, hook: str = "patient-view") -> list[Finding]:
    return card_set.compose(rules.run(SAFETY, record), hook, RENDERER.indicator)


def summary(finding: Finding) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(finding.rule, finding.variant, tuple(a.rule for a in finding.also))]


# --------------------------------------------------------------------------- one card per order


def test_colchicine_renal_and_interaction_make_one_critical_card() -> None:
    record = h.record(
        h.patient(), h.egfr(20), h.drug(CLARITHROMYCIN, rid="k"), h.drug(COLCHICINE, rid="c")
    )
    fired = rules.run(SAFETY, record)
    assert sorted(f.rule for f in fired) == ["colchicine-interaction", "colchicine-renal"]
    (card,) = composed(record)
    # Both critical (issue 14: the French RCP contraindicates colchicine below CrCl 30): the
    # finding about the drug itself leads the interaction.
    assert summary(card) == [("colchicine-renal", "severe-renal", ("colchicine-interaction",))]
    assert RENDERER.indicator(card) == "critical"
    assert card.facts["drug"].ref == "MedicationRequest/c"  # the lead's facts
    # The evidence of both, each item once: the colchicine, the eGFR, the clarithromycin.
    assert [getattr(e, "ref", None) for e in card.evidence] == [
        "MedicationRequest/c",
        "Observation/egfr",
        "MedicationRequest/k",
    ]


def test_bisphosphonate_renal_and_oesophageal_make_one_card() -> None:
    record = h.record(
        h.patient(), h.egfr(30), h.condition(h.SNOMED, REFLUX), h.drug(ALENDRONATE, rid="a")
    )
    (card,) = composed(record)
    # Both warnings: the service lists bisphosphonate-renal first.
    assert summary(card) == [
        ("bisphosphonate-renal", "not-recommended", ("bisphosphonate-oesophageal",))
    ]
    assert RENDERER.indicator(card) == "warning"


def test_at_equal_severity_the_drugs_own_finding_leads_an_interaction() -> None:
    # The diltiazem draft has a low reading (warning) and an interaction with the active
    # colchicine (warning); the service lists colchicine-interaction first, yet the finding
    # about diltiazem itself leads its card.
    record = with_drafts(
        [h.patient(), h.egfr(85), systolic(84), h.drug(COLCHICINE, rid="c")],
        [draft(DILTIAZEM, "d")],
    )
    (card,) = composed(record, "order-sign")
    assert summary(card) == [("ccb-hypotension", "low-reading", ("colchicine-interaction",))]
    assert not card.quiet_unless_changed


def test_findings_about_other_orders_or_about_no_order_stay_apart() -> None:
    record = h.record(
        h.patient(), h.egfr(70, days_ago=800), h.drug(COLCHICINE, rid="c"), h.drug(ALENDRONATE)
    )
    about_patient = Finding("calcinosis-type", "metastatic")
    findings = [*rules.run(SAFETY, record), about_patient]
    result = card_set.compose(findings, "patient-view", RENDERER.indicator)
    assert [(f.rule, f.also) for f in result] == [
        ("colchicine-renal", ()),
        ("bisphosphonate-renal", ()),
        ("calcinosis-type", ()),
    ]
    assert result[-1] is about_patient


def test_two_interactions_of_one_order_make_one_card() -> None:
    record = h.record(
        h.patient(),
        h.egfr(45),
        h.drug(COLCHICINE, rid="c"),
        h.drug(DILTIAZEM, rid="d"),
        h.drug(CLARITHROMYCIN, rid="k"),
    )
    (card,) = composed(record)
    assert summary(card) == [
        ("colchicine-interaction", "contraindicated", ("colchicine-interaction",))
    ]
    assert card.facts["other"].ref == "MedicationRequest/k"  # the critical pair leads


def test_a_merged_card_fingerprints_every_finding_and_a_single_one_is_unchanged() -> None:
    record = h.record(
        h.patient(), h.egfr(20), h.drug(CLARITHROMYCIN, rid="k"), h.drug(COLCHICINE, rid="c")
    )
    (card,) = composed(record)
    alone = replace(card, also=())
    assert evidence_fingerprint(card, strict=True) != evidence_fingerprint(alone, strict=True)
    # A card of one finding keeps the fingerprint it had before the card set (no snooze lost).
    old = canonical([alone.rule, alone.variant, alone.evidence, alone.facts], strict=True)
    digest = hashlib.sha256(
        json.dumps(old, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert evidence_fingerprint(alone) == digest


# --------------------------------------------------------------------------- standing interactions


ON_COLCHICINE = h.drug(COLCHICINE, rid="c")
# case -> (record resources, draft orders, hook, quiet at that hook?)
STANDING_CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], str, bool]] = {
    # colchicine + diltiazem, both active, normal kidneys: the standing caution of seed 002
    "both-active": (
        [h.egfr(80), ON_COLCHICINE, h.drug(DILTIAZEM, rid="d")],
        [],
        "patient-view",
        True,
    ),
    # the same pair when diltiazem is being ordered: shown
    "one-ordered": ([h.egfr(80), ON_COLCHICINE], [draft(DILTIAZEM, "d")], "order-sign", False),
    # critical (clarithromycin with eGFR 40): always shown
    "critical": (
        [h.egfr(40), ON_COLCHICINE, h.drug(CLARITHROMYCIN, rid="k")],
        [],
        "patient-view",
        False,
    ),
    # the interaction shares its card with the colchicine's own renal warning: shown
    "with-own-finding": (
        [h.egfr(70, days_ago=800), ON_COLCHICINE, h.drug(DILTIAZEM, rid="d")],
        [],
        "patient-view",
        False,
    ),
}


@pytest.mark.parametrize("case", STANDING_CASES)
def test_which_cards_are_standing_interactions(case: str) -> None:
    resources, drafts, hook, quiet = STANDING_CASES[case]
    record = with_drafts([h.patient(), *resources], drafts)
    cards = [f for f in composed(record, hook) if f.rule == "colchicine-interaction" or f.also]
    assert len(cards) == 1
    assert cards[0].quiet_unless_changed is quiet


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    clock = {"now": NOW}
    application = create_app(make_settings(tmp_path, clock=lambda: clock["now"]))
    yield application
    application.extensions["cds_engine"].close()


def post(app: Flask, service_id: str, body: dict[str, Any], lang: str = "en") -> list[Any]:
    body = {**body, "hookInstance": str(uuid.uuid4())}
    response = app.test_client().post(
        f"/cds-services/{service_id}", json=body, headers={"Accept-Language": lang}
    )
    assert response.status_code == 200, response.json
    return response.json["cards"]


def topics(cards: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["source"]["topic"]["code"], c["indicator"]) for c in cards]


def test_a_standing_interaction_is_shown_once_then_when_its_evidence_changes(app: Flask) -> None:
    resources = [h.patient(), h.egfr(80), h.drug(COLCHICINE, rid="c"), h.drug(DILTIAZEM, rid="d")]
    body = build_request(PATIENT_VIEW, resources)
    caution = [("colchicine-interaction", "warning")]
    assert topics(post(app, PATIENT_VIEW.id, body)) == caution  # a first showing
    assert topics(post(app, PATIENT_VIEW.id, body)) == []  # the same evidence: quiet
    assert topics(post(app, PATIENT_VIEW.id, body, "fr")) == []  # in any language

    changed = copy.deepcopy(body)  # another diltiazem dose: the evidence changed
    for entry in changed["prefetch"]["medications"]["entry"]:
        if entry["resource"]["id"] == "d":
            entry["resource"]["dosageInstruction"] = [{"text": "120 mg twice daily"}]
    assert topics(post(app, PATIENT_VIEW.id, changed)) == caution
    assert topics(post(app, PATIENT_VIEW.id, changed)) == []

    # Ordering one of the two drugs shows it, at every call.
    ordering = build_request(ORDER_SIGN, [*resources[:3], draft(DILTIAZEM, "d2")])
    for _ in range(2):
        assert topics(post(app, ORDER_SIGN.id, ordering)) == caution


def test_a_critical_interaction_is_shown_at_every_chart_opening(app: Flask) -> None:
    body = build_request(
        PATIENT_VIEW,
        [h.patient(), h.egfr(40), h.drug(COLCHICINE, rid="c"), h.drug(CLARITHROMYCIN, rid="k")],
    )
    for _ in range(3):
        assert topics(post(app, PATIENT_VIEW.id, body)) == [("colchicine-interaction", "critical")]


def test_on_the_fixtures_a_second_chart_opening_drops_only_standing_interactions(
    app: Flask,
) -> None:
    store = app.extensions["cds_engine"].store
    quieted = 0
    for name in fixture_names():
        body = load_request(name)
        first = post(app, PATIENT_VIEW.id, body)
        second = post(app, PATIENT_VIEW.id, body)
        safety = [c for c in first if c["source"]["topic"]["code"] in SAFETY]
        standing = [
            c
            for c in safety
            if c["source"]["topic"]["code"] in INTERACTIONS
            and c["indicator"] != "critical"
            and set((store.issued(c["uuid"]).also_rules or "").split(",")) - {""} <= INTERACTIONS
        ]
        kept = [c for c in safety if c not in standing]
        assert topics([c for c in second if c["source"]["topic"]["code"] in SAFETY]) == topics(
            kept
        ), name
        quieted += len(standing)
    assert quieted >= 3  # fixtures 22, 38, 39, 40 hold standing interactions


# --------------------------------------------------------------------------- the rendered card


@pytest.mark.parametrize(
    ("lang", "also", "footer"),
    [
        (
            "en",
            "**Also:** Do not combine colchicine and clarithromycin",
            "Rule `colchicine-renal`, also",
        ),
        (
            "fr",
            "**Également :** Ne pas associer colchicine et clarithromycine",
            "Règle `colchicine-renal`,",
        ),
    ],
)
def test_the_merged_card_reads_as_one(app: Flask, lang: str, also: str, footer: str) -> None:
    name = "26-select-colchicine-egfr-24-clarithromycin"
    cards = post(app, "calcinosis-order-select", load_request(name, "order-select"), lang)
    assert [c["rule"] for c in load_expected(name, "order-select")["cards"]] == ["colchicine-renal"]
    (card,) = cards
    assert card["indicator"] == "critical"
    detail = card["detail"]
    assert also in detail
    assert footer in detail
    assert "`colchicine-interaction`" in detail
    assert detail.index(also) < detail.index("`MedicationRequest/fix-26-draft-1`")  # evidence
    actions = [(a["type"], a.get("resourceId")) for s in card["suggestions"] for a in s["actions"]]
    # One removal of the draft (both findings offer it), and the renal card's creatinine order.
    assert actions.count(("delete", "MedicationRequest/fix-26-draft-1")) == 1
    assert [t for t, _ in actions] == ["delete", "create"]
    assert [s.get("isRecommended", False) for s in card["suggestions"]] == [True, False]
    codes = [r["code"] for r in card["overrideReasons"]]
    assert len(codes) == len(set(codes))
    assert {"colchicine-dose-reduced", "dose-already-adjusted"} <= set(codes)  # both rules'
    urls = [link["url"] for link in card["links"]]
    assert "https://base-donnees-publique.medicaments.gouv.fr/extrait.php?specid=61331730" in urls
    assert len(urls) == len(set(urls))
    issued = app.extensions["cds_engine"].store.issued(card["uuid"])
    assert (issued.rule_id, issued.variant, issued.also_rules) == (
        "colchicine-renal",
        "severe-renal",
        "colchicine-interaction",
    )


def test_when_nothing_is_merged_the_card_is_as_before() -> None:
    record = h.record(h.patient(), h.egfr(20), h.drug(COLCHICINE, rid="c"))
    (finding,) = composed(record)
    assert finding.also == ()
    version = RENDERER.library.version
    for lang, footer in (("en", "Rule `colchicine-renal` · knowledge"), ("fr", "Règle `col")):
        detail = RENDERER.render(finding, lang, h.PID)["detail"]
        assert "**Also" not in detail
        assert "**Également" not in detail
        assert footer in detail
        assert version in detail


def test_now_is_not_part_of_a_standing_fingerprint() -> None:
    """The same record an hour later: the same evidence (else it would show at every call)."""
    resources = [h.patient(), h.egfr(80), h.drug(COLCHICINE, rid="c"), h.drug(DILTIAZEM, rid="d")]
    later = NOW.replace(hour=NOW.hour + 1) if NOW.hour < 23 else NOW

    def fingerprint(now: datetime) -> str:
        record = h.record(*resources, now=now)
        (card,) = composed(record)
        return evidence_fingerprint(card)

    assert fingerprint(NOW) == fingerprint(later)


def test_a_site_can_show_standing_interactions_at_every_chart_opening(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, quiet_standing_interactions=False)
    application = create_app(settings)
    body = build_request(
        PATIENT_VIEW,
        [h.patient(), h.egfr(80), h.drug(COLCHICINE, rid="c"), h.drug(DILTIAZEM, rid="d")],
    )
    try:
        for _ in range(2):
            cards = post(application, PATIENT_VIEW.id, body)
            assert topics(cards) == [("colchicine-interaction", "warning")]
    finally:
        application.extensions["cds_engine"].close()
    off = Settings.from_env({"CDS_QUIET_STANDING_INTERACTIONS": "off"})
    assert not off.quiet_standing_interactions
    assert Settings.from_env({}).quiet_standing_interactions
