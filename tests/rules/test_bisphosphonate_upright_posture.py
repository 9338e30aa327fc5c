"""Issue 14, point 1 (inability to stay upright): an oral alendronate, risedronate or
ibandronate order with an active bed confinement on the problem list (ICD-10-CM Z74.01, or its
words) is critical: the labels contraindicate them when the patient cannot stand or sit upright
for 30 minutes (ibandronate tablets: 60). The injection is not checked (``route: oral``);
etidronate is not in the rule (no label retrieved states it)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES
from tests.helpers import ATC, ICD10CM, condition, drug, egfr, medication, patient, record, variants

RULE = "bisphosphonate-upright"
BEDRIDDEN = condition(ICD10CM, "Z74.01", rid="bed")


def ibandronate(dosage: str) -> dict[str, Any]:
    return medication(
        rid="iba",
        medicationCodeableConcept={"coding": [{"system": ATC, "code": "M05BA06"}]},
        dosageInstruction=[{"text": dosage}],
    )


@pytest.mark.parametrize(
    "order",
    [
        drug("46041"),  # alendronate
        drug("73056"),  # risedronate
        ibandronate("150 mg by mouth once a month"),
    ],
)
def test_an_oral_bisphosphonate_in_a_patient_confined_to_bed_is_critical(
    order: dict[str, Any],
) -> None:
    assert variants(RULE, patient(), egfr(80), BEDRIDDEN, order) == ["contraindicated"]


def test_the_card_says_the_minutes_of_each_label() -> None:
    minutes = {
        code: RULES[RULE](record(patient(), BEDRIDDEN, order))[0].facts["minutes"]
        for code, order in (
            ("alendronate", drug("46041")),
            ("ibandronate", ibandronate("150 mg po")),
        )
    }
    assert minutes == {"alendronate": 30, "ibandronate": 60}


@pytest.mark.parametrize(
    "chart",
    [
        (BEDRIDDEN, ibandronate("3 mg intravenously every 3 months")),  # an injection
        (BEDRIDDEN, drug("M05BA08", system=ATC)),  # zoledronic acid: not in the rule
        (condition(ICD10CM, "Z74.09", rid="mob"), drug("46041")),  # reduced mobility only
        (condition(ICD10CM, "Z74.01", rid="bed", clinical="resolved"), drug("46041")),
        (drug("46041"),),
    ],
)
def test_an_injection_another_drug_or_no_current_bed_confinement_is_silent(
    chart: tuple[dict[str, Any], ...],
) -> None:
    assert variants(RULE, patient(), egfr(80), *chart) == []


def test_bedridden_in_words_counts() -> None:
    words = condition(ICD10CM, "", rid="bed", text="Grabataire depuis sa fracture du col")
    assert variants(RULE, patient(), words, drug("46041")) == ["contraindicated"]


def test_every_row_is_oral_critical_and_names_its_label() -> None:
    rule = load_table()[RULE]
    assert set(rule.drugs) == {"alendronate", "risedronate", "ibandronate"}
    assert {row.route for row in rule.rows} == {"oral"}
    for row in rule.rows:
        assert row.label is not None
        assert "4 Contraindications" in row.label
        assert "DailyMed set id" in row.label
