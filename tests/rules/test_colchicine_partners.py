"""Issue 14, point 9 (the rest): colchicine with statins, HIV protease inhibitors, cobicistat,
fluconazole and the French-only macrolides, and one card per colchicine order whatever the
number of partners (cds_service/knowledge/safety.yaml ``colchicine-interaction``;
rules/card_set.py).

- A statin: a warning (Colcrys label, Table 4: myopathy and rhabdomyolysis).
- An HIV protease inhibitor (not fosamprenavir) or cobicistat with renal or hepatic impairment:
  critical (Colcrys contraindication, strong CYP3A4 inhibitors); otherwise a warning.
- Fluconazole (moderate CYP3A4): a warning.
- Roxithromycin, josamycin, pristinamycin (French, no RxNorm code; recognised by ATC and name):
  critical whatever the renal function (French colchicine RCP).
- Several findings about one colchicine order make one card, led by the most severe."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service import rules
from cds_service.cards import CardLibrary, Renderer
from cds_service.hooks.services import load_services
from cds_service.rules import card_set
from cds_service.settings import DEFAULT_CARDS_DIR
from tests import helpers as h
from tests.helpers import ATC, SNOMED, condition, drug, egfr, medication, patient, variants

RULE = "colchicine-interaction"
COLCHICINE, CLARITHROMYCIN = "2683", "21212"
ATORVASTATIN, SIMVASTATIN, FLUCONAZOLE = "83367", "36567", "4450"
RITONAVIR_TABLET, COBICISTAT_TABLET = "900575", "1551993"
HEPATIC_FAILURE = "59927004"
RENDERER = Renderer(CardLibrary(DEFAULT_CARDS_DIR, h.TERMINOLOGY))
SAFETY = load_services(h.TERMINOLOGY)["calcinosis-order-sign"].rules


def colchicine() -> dict[str, Any]:
    return drug(COLCHICINE, rid="colch")


def named(text: str, rid: str = "other") -> dict[str, Any]:
    return medication("active", rid, medicationCodeableConcept={"text": text})


@pytest.mark.parametrize(
    "statin",
    [
        drug(ATORVASTATIN, rid="other"),
        drug(SIMVASTATIN, rid="other"),
        named("Tahor 20 mg, comprimé pelliculé"),
        named("rosuvastatin 10 mg tablet"),
    ],
)
def test_a_statin_is_a_myopathy_warning_whatever_the_renal_function(
    statin: dict[str, Any],
) -> None:
    for gfr in (85, 45):
        assert variants(RULE, patient(), egfr(gfr), colchicine(), statin) == ["statin"]


@pytest.mark.parametrize(
    "booster",
    [
        drug(RITONAVIR_TABLET, rid="other"),
        drug("J05AE10", rid="other", system=ATC),  # darunavir
        named("Kaletra (lopinavir / ritonavir) 200/50 mg"),
        drug(COBICISTAT_TABLET, rid="other"),
        named("Paxlovid (nirmatrelvir / ritonavir)"),
    ],
)
def test_protease_inhibitors_and_cobicistat_are_critical_with_renal_or_hepatic_impairment(
    booster: dict[str, Any],
) -> None:
    assert variants(RULE, patient(), egfr(45), colchicine(), booster) == ["contraindicated"]
    liver = condition(SNOMED, HEPATIC_FAILURE)
    assert variants(RULE, patient(), egfr(90), liver, colchicine(), booster) == ["contraindicated"]
    # normal renal and hepatic function: reduce the colchicine dose (warning)
    assert variants(RULE, patient(), egfr(90), colchicine(), booster) == ["interaction"]


def test_fosamprenavir_is_not_a_partner() -> None:
    fos = named("fosamprenavir 700 mg tablet (Lexiva)")
    assert variants(RULE, patient(), egfr(45), colchicine(), fos) == []


def test_fluconazole_is_a_warning() -> None:
    fluco = drug(FLUCONAZOLE, rid="other")
    assert variants(RULE, patient(), egfr(90), colchicine(), fluco) == ["interaction"]
    assert variants(RULE, patient(), egfr(45), colchicine(), fluco) == ["interaction"]


@pytest.mark.parametrize(
    "macrolide",
    [
        drug("J01FA06", rid="other", system=ATC),  # roxithromycin
        named("Rulid 150 mg, comprimé"),
        named("Josacine 500 mg, comprimé pelliculé"),
        drug("J01FG01", rid="other", system=ATC),  # pristinamycin
        named("Pyostacine 500 mg, comprimé pelliculé"),
    ],
)
def test_french_only_macrolides_are_critical_whatever_the_renal_function(
    macrolide: dict[str, Any],
) -> None:
    assert variants(RULE, patient(), egfr(95), colchicine(), macrolide) == ["macrolide"]


def test_french_only_value_sets_have_no_rxnorm_code_and_say_why() -> None:
    for vs_id in ("roxithromycin", "josamycin", "pristinamycin"):
        vs = h.TERMINOLOGY[vs_id]
        assert vs.atc_only_reason
        assert "RxNorm" in vs.atc_only_reason
        assert {c.system for c in vs.concepts} == {ATC}
    assert h.TERMINOLOGY["clarithromycin"].atc_only_reason is None


# ------------------------------------------------------------------ one card per colchicine order


def composed(*resources: dict[str, Any]) -> list[Any]:
    record = h.record(patient(), *resources)
    return card_set.compose(rules.run(SAFETY, record), "patient-view", RENDERER.indicator)


def test_two_interacting_drugs_make_one_colchicine_card_led_by_the_most_severe() -> None:
    cards = composed(
        egfr(85),
        colchicine(),
        drug(ATORVASTATIN, rid="statin"),
        drug("J01FA06", rid="roxi", system=ATC),
    )
    colchicine_cards = [c for c in cards if c.facts["drug"].ref == "MedicationRequest/colch"]
    assert len(cards) == len(colchicine_cards) == 1
    (card,) = cards
    assert (card.rule, card.variant) == (RULE, "macrolide")
    assert [(a.rule, a.variant) for a in card.also] == [(RULE, "statin")]
    assert RENDERER.indicator(card) == "critical"


def test_renal_and_two_interactions_about_one_order_make_one_card() -> None:
    (card,) = composed(
        egfr(25),
        colchicine(),
        drug(CLARITHROMYCIN, rid="k"),
        drug(SIMVASTATIN, rid="s"),
    )
    assert (card.rule, card.variant) == ("colchicine-renal", "severe-renal")
    assert sorted((a.rule, a.variant) for a in card.also) == [
        (RULE, "contraindicated"),
        (RULE, "statin"),
    ]
