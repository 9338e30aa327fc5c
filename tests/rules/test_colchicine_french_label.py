"""Colchicine and the French RCP (issue 14, point 9): the contraindications of Colchicine
Opocalcium 1 mg and Colchimax (ANSM safety information, June 2022) are applied in every EHR the
service serves: below a creatinine clearance of 30 mL/min (`colchicine-renal`, critical on
current data) and with a macrolide other than spiramycin whatever the renal function
(`colchicine-interaction` variant `macrolide`, critical). The other P-gp / strong CYP3A4
inhibitors keep the US Colcrys reading (critical only with renal or hepatic impairment)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service import rules
from cds_service.cards import CardLibrary, Renderer
from cds_service.hooks.services import load_services
from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES, card_set
from cds_service.settings import DEFAULT_CARDS_DIR
from tests import helpers as h

RENDERER = Renderer(CardLibrary(DEFAULT_CARDS_DIR, h.TERMINOLOGY))
SAFETY = load_services(h.TERMINOLOGY)["calcinosis-order-sign"].rules
COLCHICINE = "2683"
MACROLIDES = {  # RxNorm ingredient codes (valuesets/<id>.yaml)
    "clarithromycin": "21212",
    "erythromycin": "4053",
    "azithromycin": "18631",
    "telithromycin": "274786",
}
KETOCONAZOLE, CICLOSPORIN, DILTIAZEM = "6135", "3008", "3443"
ATC = "http://www.whocc.no/atc"


def interaction(partner: dict[str, Any], *resources: dict[str, Any]) -> list[str]:
    rec = h.record(h.patient(), h.drug(COLCHICINE, "c"), partner, *resources)
    return [f.variant for f in RULES["colchicine-interaction"](rec)]


def indicator(rule: str, variant: str) -> str:
    return RENDERER.library.cards[rule].variant(variant)["indicator"]


@pytest.mark.parametrize("name", sorted(MACROLIDES))
@pytest.mark.parametrize(
    "renal",
    [(h.egfr(95),), (h.egfr(50, days_ago=600),), ()],
    ids=["normal-egfr", "stale-egfr", "no-renal-data"],
)
def test_a_macrolide_with_colchicine_is_critical_whatever_the_renal_function(
    name: str, renal: tuple
) -> None:
    assert interaction(h.drug(MACROLIDES[name], "k"), *renal) == ["macrolide"]
    assert indicator("colchicine-interaction", "macrolide") == "critical"


@pytest.mark.parametrize("code", ["J01FA01", "J01FA09", "J01FA10", "J01FA15"])
def test_a_macrolide_is_read_by_its_atc_code(code: str) -> None:
    assert interaction(h.drug(code, "k", system=ATC), h.egfr(90)) == ["macrolide"]


def test_a_french_free_text_macrolide_is_read_and_spiramycin_is_spared() -> None:
    def named(text: str) -> list[str]:
        order = h.medication("active", "k", medicationCodeableConcept={"text": text})
        return interaction(order, h.egfr(90))

    assert named("Azithromycine 250 mg comprimé pelliculé") == ["macrolide"]
    assert named("Érythromycine 500 mg comprimé") == ["macrolide"]
    assert named("ZITHROMAX 250 mg tablet") == ["macrolide"]
    assert named("Spiramycine 3 M UI comprimé pelliculé") == []  # the RCP's exception
    assert named("Erythromycin 2% gel") == []  # a local form: no systemic exposure


def test_clarithromycin_in_renal_impairment_keeps_the_colcrys_card() -> None:
    # Both labels forbid it; the first row that holds gives the card (the Colcrys one names
    # the impairment).
    assert interaction(h.drug(MACROLIDES["clarithromycin"], "k"), h.egfr(45)) == ["contraindicated"]
    assert interaction(h.drug(MACROLIDES["erythromycin"], "k"), h.egfr(45)) == ["macrolide"]


def test_other_inhibitors_keep_the_us_reading() -> None:
    assert interaction(h.drug(KETOCONAZOLE, "k"), h.egfr(90)) == ["interaction"]
    assert interaction(h.drug(KETOCONAZOLE, "k"), h.egfr(45)) == ["contraindicated"]
    assert interaction(h.drug(CICLOSPORIN, "k"), h.egfr(90)) == ["interaction"]
    assert interaction(h.drug(DILTIAZEM, "k"), h.egfr(45)) == ["interaction"]


@pytest.mark.parametrize(
    ("resources", "variant"),
    [
        ((h.egfr(29),), "severe-renal"),
        ((h.egfr(30),), None),  # 30 is not below 30
        ((h.egfr(22, days_ago=400),), "stale"),  # not current data: recheck, never critical
        ((h.condition(h.ICD10CM, "N18.4", rid="ckd"),), "severe-renal"),  # coded CKD G4
    ],
    ids=["egfr-29", "egfr-30", "stale-egfr-22", "ckd-g4"],
)
def test_colchicine_below_30_is_critical_on_current_data_only(
    resources: tuple, variant: str | None
) -> None:
    rec = h.record(h.patient(), h.drug(COLCHICINE), *resources)
    found = [f.variant for f in RULES["colchicine-renal"](rec)]
    assert found == ([variant] if variant else [])
    assert indicator("colchicine-renal", "severe-renal") == "critical"
    assert indicator("colchicine-renal", "stale") == "warning"


def test_both_contraindications_make_one_card_led_by_the_renal_one() -> None:
    rec = h.record(
        h.patient(), h.egfr(25), h.drug(MACROLIDES["azithromycin"], "k"), h.drug(COLCHICINE, "c")
    )
    (card,) = card_set.compose(rules.run(SAFETY, rec), "patient-view", RENDERER.indicator)
    assert (card.rule, card.variant) == ("colchicine-renal", "severe-renal")
    assert [(a.rule, a.variant) for a in card.also] == [("colchicine-interaction", "macrolide")]
    assert not card.quiet_unless_changed  # critical: shown at every chart opening
    en = RENDERER.render(card, "en", h.PID)["detail"]
    assert "**Also:** Do not combine colchicine and azithromycin" in en


def test_the_critical_rows_cite_the_ansm_and_the_french_cards_the_french_product() -> None:
    table = load_table()
    labels = {
        row.variant: row.label
        for rule in ("colchicine-renal", "colchicine-interaction")
        for row in table[rule].rows
        if row.label
    }
    assert "ANSM" in labels["severe-renal"]
    assert "30 mL/min" in labels["severe-renal"]
    assert "spiramycin" in labels["macrolide"]
    assert "ANSM" in labels["macrolide"]
    card = RENDERER.library.cards["colchicine-interaction"].data["variants"]["macrolide"]
    assert "1 mg" in card["detail"]["fr"]
    assert "spiramycine" in card["detail"]["fr"]
    assert "spiramycin" in card["detail"]["en"]
