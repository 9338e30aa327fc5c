"""Issue 14, point 2 (minocycline chelation): minocycline taken with an aluminium, calcium,
magnesium or iron product gives the order-time warning "separate the doses" - every cation the
minocycline label names, magnesium antacids and supplements (`magnesium-oral`) and oral iron
(`iron-oral`) included. Chelation happens in the gut: the row is `route: oral` and, in an
interaction, an injection or infusion on either side gives no card (an IV minocycline, an iron
infusion, IV magnesium)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.fhir.record import Located
from cds_service.knowledge.chart import Chart, build_chart
from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES
from tests import helpers as h
from tests.conftest import NOW

RULE = "minocycline-chelation"
MINOCYCLINE = "6980"  # RxNorm ingredient
MINOCYCLINE_INJECTION = "317127"  # minocycline 100 MG Injection
MAGNESIUM_OXIDE = "252430"  # Magnesium Oxide 400 MG Oral Capsule
FERROUS_SULFATE = "310325"  # ferrous sulfate 325 MG Oral Tablet
POLYSACCHARIDE_IRON = "1312970"  # Polysaccharide iron complex 50 MG Oral Capsule
MILK_OF_MAGNESIA = (
    "668664"  # Magnesium Hydroxide 311 MG Chewable Tablet [Phillips Milk of Magnesia]
)


def named(text: str, rid: str, route: str | None = None) -> dict[str, Any]:
    res = h.medication("active", rid, medicationCodeableConcept={"text": text})
    if route:
        res["dosageInstruction"] = [{"text": route}]
    return res


def variants(*resources: dict[str, Any]) -> list[str]:
    return h.variants(RULE, h.patient(), h.egfr(85), *resources)


def test_the_rule_reads_every_cation_the_label_names() -> None:
    rule = load_table()[RULE]
    assert set(rule.partners) == {
        "aluminium-hydroxide",
        "calcium-supplement",
        "magnesium-oral",
        "iron-oral",
    }
    assert [row.route for row in rule.rows] == ["oral"]


@pytest.mark.parametrize(
    "partner",
    [
        h.drug(MAGNESIUM_OXIDE, rid="p"),
        h.drug(MILK_OF_MAGNESIA, rid="p"),
        h.drug("A12CC10", rid="p", system=h.ATC),  # magnesium oxide (ATC)
        named("Maalox suspension 10 mL after meals", "p"),  # aluminium + magnesium
        named("MAGNESIUM CHLORIDE 535 MG PO TBEC", "p"),
        h.drug(FERROUS_SULFATE, rid="p"),
        h.drug(POLYSACCHARIDE_IRON, rid="p"),
        h.drug("B03AA02", rid="p", system=h.ATC),  # ferrous fumarate (ATC)
        named("sulfate ferreux 80 mg, comprimé pelliculé", "p"),
        named("FERROUS SULFATE 325 (65 FE) MG PO TABS", "p"),
    ],
)
def test_magnesium_and_iron_products_are_chelation_partners(partner: dict[str, Any]) -> None:
    assert variants(h.drug(MINOCYCLINE, rid="mino"), partner) == ["separate"]


@pytest.mark.parametrize(
    "partner",
    [
        named("Magnesium stearate", "p"),  # an excipient, not magnesium given
        named("magnesium sulfate 4 g in 100 mL", "p"),  # left out of the value set
        named("iron sucrose 20 mg/mL", "p"),  # parenteral iron: no value set
        named("sildenafil citrate 20 mg", "p"),
    ],
)
def test_excipients_and_parenteral_salts_are_not_partners(partner: dict[str, Any]) -> None:
    assert variants(h.drug(MINOCYCLINE, rid="mino"), partner) == []


def test_an_injection_on_either_side_gives_no_chelation_card() -> None:
    # minocycline injection (its product name says so) with oral magnesium
    injection = h.medication(
        "active",
        "mino",
        medicationCodeableConcept={
            "coding": [
                {
                    "system": h.RXNORM,
                    "code": MINOCYCLINE_INJECTION,
                    "display": "minocycline 100 MG Injection",
                }
            ]
        },
    )
    assert variants(injection, h.drug(MAGNESIUM_OXIDE, rid="p")) == []
    # oral minocycline with a ferrous sulfate order given intravenously (its dosage says so)
    iv_iron = {**h.drug(FERROUS_SULFATE, rid="p"), "dosageInstruction": [{"text": "IV infusion"}]}
    assert variants(h.drug(MINOCYCLINE, rid="mino"), iv_iron) == []
    # an order that says nothing of its route is oral (no missed warning)
    assert variants(h.drug(MINOCYCLINE, rid="mino"), h.drug(FERROUS_SULFATE, rid="p")) == [
        "separate"
    ]


def _with_draft(resources: list[dict[str, Any]], draft: dict[str, Any]) -> Chart:
    located = [Located(f"prefetch.test.entry[{i}].resource", r) for i, r in enumerate(resources)]
    order = {**draft, "status": "draft", "authoredOn": NOW.date().isoformat()}
    return build_chart(located, h.PID, h.TERMINOLOGY, NOW, [Located("context.d[0]", order)])


def test_at_order_time_the_card_is_about_the_draft_either_side() -> None:
    # a magnesium draft with an active minocycline: the finding is about the magnesium draft
    rec = _with_draft(
        [h.patient(), h.egfr(85), h.drug(MINOCYCLINE, rid="mino")],
        h.drug(MAGNESIUM_OXIDE, rid="mg"),
    )
    findings = RULES[RULE](rec)
    assert [f.variant for f in findings] == ["separate"]
    assert findings[0].facts["drug"].ref == "MedicationRequest/mg"
    # a minocycline draft with active iron
    rec = _with_draft(
        [h.patient(), h.egfr(85), h.drug(FERROUS_SULFATE, rid="fe")],
        h.drug(MINOCYCLINE, rid="mino"),
    )
    assert [f.facts["other"].ref for f in RULES[RULE](rec)] == ["MedicationRequest/fe"]


def test_the_card_no_longer_says_magnesium_and_iron_are_not_recognised() -> None:
    from cds_service.cards import CardLibrary
    from cds_service.settings import DEFAULT_CARDS_DIR

    card = CardLibrary(DEFAULT_CARDS_DIR, h.TERMINOLOGY).cards[RULE].data
    detail = card["variants"]["separate"]["detail"]
    assert "not recognised" not in detail["en"]
    assert "ne sont pas" not in detail["fr"]
    assert "magnesium" in card["title"]["en"]
    assert "fer" in card["title"]["fr"]
