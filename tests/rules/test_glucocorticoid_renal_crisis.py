"""Glucocorticoids in systemic sclerosis (issue 14, point 6): a systemic glucocorticoid at 15
mg/day or more of prednisone equivalent in a patient with SSc is a warning (scleroderma renal
crisis; Steen & Medsger 1998), its own variant with positive anti-RNA polymerase III
antibodies; an order whose daily dose cannot be read is a warning that says so (never silence);
below 15 mg/day, no card. The daily dose is a row field (`min_daily_dose`, `unread_daily_dose`
in knowledge/safety.yaml), read by rules/predicates.py `daily_dose_mg` from
MedicationRequest.dosageInstruction and converted by the equivalent doses of thresholds.yaml."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.cards import CardLibrary, Renderer
from cds_service.fhir.record import MedicationFact
from cds_service.knowledge.loader import thresholds
from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES
from cds_service.rules.predicates import (
    DailyDose,
    daily_dose_mg,
    prednisone_equivalent,
)
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import (
    RXNORM,
    SNOMED,
    TERMINOLOGY,
    antibody,
    condition,
    egfr,
    medication,
    patient,
    record,
    variants,
)

RULE = "glucocorticoid-renal-crisis"
SSC = condition(SNOMED, "89155008", rid="ssc")
RNAP3_LOINC = "81738-7"
INGREDIENT = {
    "prednisone": "8640",
    "prednisolone": "8638",
    "methylprednisolone": "6902",
    "dexamethasone": "3264",
    "hydrocortisone": "5492",
}


def steroid(*dosages: dict[str, Any], drug: str = "prednisone", rid: str = "gc") -> dict[str, Any]:
    res = medication(
        "active",
        rid,
        medicationCodeableConcept={"coding": [{"system": RXNORM, "code": INGREDIENT[drug]}]},
    )
    if dosages:
        res["dosageInstruction"] = list(dosages)
    return res


def coded(
    value: float,
    unit: str = "mg",
    frequency: float | None = 1,
    period: float | None = 1,
    period_unit: str = "d",
    **extra: Any,
) -> dict[str, Any]:
    dosage: dict[str, Any] = {
        "doseAndRate": [{"doseQuantity": {"value": value, "unit": unit, "code": unit}}],
        **extra,
    }
    if period is not None:
        repeat: dict[str, Any] = {"period": period, "periodUnit": period_unit}
        if frequency is not None:
            repeat["frequency"] = frequency
        dosage["timing"] = {"repeat": repeat}
    return dosage


def text(words: str) -> dict[str, Any]:
    return {"text": words}


def order(resource: dict[str, Any]) -> MedicationFact:
    chart = record(patient(), resource)
    return chart.medications[0]


def dose(*dosages: dict[str, Any], drug: str = "prednisone") -> DailyDose | None:
    return daily_dose_mg(order(steroid(*dosages, drug=drug)))


def found(*resources: dict[str, Any]) -> list[str]:
    return variants(RULE, patient(), egfr(85), *resources)


# ------------------------------------------------------------------------- dose reading


def test_a_coded_dose_in_mg_once_a_day() -> None:
    assert dose(coded(20)) == DailyDose(20)


def test_a_dose_in_grams_is_converted_to_mg() -> None:
    assert dose(coded(1, "g")) == DailyDose(1000)


def test_a_frequency_of_two_a_day_doubles_the_dose() -> None:
    assert dose(coded(10, frequency=2)) == DailyDose(20)


def test_a_period_of_two_days_halves_it() -> None:
    assert dose(coded(20, period=2)) == DailyDose(10)


def test_every_eight_hours_is_three_doses_a_day() -> None:
    assert dose(coded(5, period=8, period_unit="h")) == DailyDose(15)


def test_a_dose_range_is_read_at_its_high_end() -> None:
    ranged = {
        "doseAndRate": [
            {"doseRange": {"low": {"value": 10, "unit": "mg"}, "high": {"value": 20, "unit": "mg"}}}
        ],
        "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
    }
    assert dose(ranged) == DailyDose(20)


def test_a_timing_code_gives_the_frequency() -> None:
    bid = coded(10, period=None)
    bid["timing"] = {"code": {"coding": [{"code": "BID"}]}}
    assert dose(bid) == DailyDose(20)


def test_a_dosage_text_is_read_when_nothing_is_coded() -> None:
    assert dose(text("20 mg once a day in the morning")) == DailyDose(20)
    assert dose(text("10 mg deux fois par jour")) == DailyDose(20)
    assert dose(text("2,5 mg par jour")) == DailyDose(2.5)
    assert dose(text("40 mg every other day")) == DailyDose(20)
    assert dose(text("20 mg once a day for 5 days")) == DailyDose(20)


def test_a_dose_without_its_frequency_is_only_a_lower_bound() -> None:
    assert dose(text("20 mg")) == DailyDose(20, lower_bound=True)
    assert dose(coded(10, period=None)) == DailyDose(10, lower_bound=True)


@pytest.mark.parametrize(
    "dosage",
    [
        text("as directed"),
        text("2 tablets daily"),  # not a mass
        text("10 mg morning, 5 mg evening"),  # two doses in one text
        text("10 mg 2/j"),  # a number the reading cannot explain
        coded(1, "{tablet}"),  # a coded dose that is not a mass
        coded(1, "mL"),
    ],
)
def test_an_unreadable_or_non_mg_dose_is_not_read(dosage: dict[str, Any]) -> None:
    assert dose(dosage) is None


def test_no_dosage_instruction_is_not_read() -> None:
    assert dose() is None


def test_instructions_of_one_sequence_add_up_and_a_taper_keeps_its_highest_step() -> None:
    assert dose(coded(10), coded(5)) == DailyDose(15)
    taper = (coded(30, sequence=1), coded(20, sequence=2), coded(10, sequence=3))
    assert dose(*taper) == DailyDose(30)


@pytest.mark.parametrize(
    ("drug", "mg", "prednisone_mg"),
    [
        ("prednisone", 15, 15),
        ("prednisolone", 15, 15),
        ("methylprednisolone", 12, 15),
        ("dexamethasone", 3, 20),
        ("hydrocortisone", 60, 15),
        ("hydrocortisone", 20, 5),
    ],
)
def test_doses_are_converted_to_prednisone_equivalents(
    drug: str, mg: float, prednisone_mg: float
) -> None:
    read = prednisone_equivalent(order(steroid(coded(mg), drug=drug)))
    assert read is not None
    assert read.mg == pytest.approx(prednisone_mg)


def test_the_equivalences_are_data_for_every_drug_of_the_rule() -> None:
    equivalents = thresholds()["glucocorticoid_renal_crisis"]["equivalent_dose_mg"]
    assert set(load_table()[RULE].drugs) == set(equivalents)


# ------------------------------------------------------------------------- the rule


def test_prednisone_20_mg_a_day_in_ssc_is_a_warning() -> None:
    assert found(SSC, steroid(coded(20))) == ["high-dose"]
    assert all(row.label is None for row in load_table()[RULE].rows)  # no critical row


def test_exactly_15_mg_a_day_counts() -> None:
    assert found(SSC, steroid(coded(15))) == ["high-dose"]


def test_with_positive_anti_rnap3_the_variant_names_it() -> None:
    positive = antibody(RNAP3_LOINC, "Positive")
    assert found(SSC, positive, steroid(coded(20))) == ["high-dose-rnap3"]
    negative = antibody(RNAP3_LOINC, "Negative")
    assert found(SSC, negative, steroid(coded(20))) == ["high-dose"]


@pytest.mark.parametrize(
    "dosages",
    [
        (coded(10),),
        (coded(20, period=2),),  # 10 mg/day on average
        (text("5 mg once a day"),),
    ],
)
def test_below_15_mg_a_day_no_card(dosages: tuple[dict[str, Any], ...]) -> None:
    assert found(SSC, steroid(*dosages)) == []


def test_hydrocortisone_replacement_doses_give_no_card() -> None:
    assert found(SSC, steroid(coded(10, frequency=2), drug="hydrocortisone")) == []


def test_an_unreadable_dose_is_a_warning_not_silence() -> None:
    assert found(SSC, steroid(text("as directed"))) == ["dose-unknown"]
    assert found(SSC, steroid()) == ["dose-unknown"]
    # A dose below the limit with no frequency could be divided: not read as safe.
    assert found(SSC, steroid(text("10 mg"))) == ["dose-unknown"]
    # A dose at the limit with no frequency is at least the limit.
    assert found(SSC, steroid(text("20 mg"))) == ["high-dose"]


def test_without_ssc_no_card() -> None:
    assert found(steroid(coded(40))) == []
    assert found(steroid(text("as directed"))) == []


def test_a_local_form_is_not_a_systemic_glucocorticoid() -> None:
    cream = medication(
        "active", "cream", medicationCodeableConcept={"text": "hydrocortisone 1 % cream"}
    )
    cream["dosageInstruction"] = [text("apply twice a day")]
    drops = medication(
        "active",
        "drops",
        medicationCodeableConcept={"text": "dexamethasone 0.1 % eye drops"},
    )
    assert found(SSC, cream, drops) == []


def test_the_card_shows_the_dose_read_in_both_languages() -> None:
    chart = record(patient(), egfr(85), SSC, steroid(coded(4, frequency=2), drug="dexamethasone"))
    findings = RULES[RULE](chart)
    assert [f.facts["daily_dose"] for f in findings] == [pytest.approx(53.333, rel=1e-3)]
    renderer = Renderer(CardLibrary(DEFAULT_CARDS_DIR, TERMINOLOGY))
    for lang, words in (("en", "53.3 mg of prednisone"), ("fr", "53,3 mg d'équivalent")):
        detail = " ".join(renderer.render(findings[0], lang, "p1")["detail"].split())
        assert words in detail, detail


@pytest.mark.parametrize("limit", ["{mg: 15}", "{prednisone_mg: high}", "15"])
def test_a_daily_dose_limit_in_another_unit_is_refused_at_load(tmp_path: Any, limit: str) -> None:
    table = tmp_path / "safety.yaml"
    table.write_text(
        "rules:\n  r:\n    drugs: [prednisone]\n    sources: [s]\n    rows:\n"
        f"      - {{when: {{condition: [systemic-sclerosis]}}, min_daily_dose: {limit}, "
        "variant: v}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="min_daily_dose"):
        load_table(table)
