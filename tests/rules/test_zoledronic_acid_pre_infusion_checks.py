"""Issue 14, point 1 (zoledronic acid before the infusion): a 25-OH vitamin D within 180 days
below 20 ng/mL (Endocrine Society deficiency) or below the laboratory's range is a warning,
supplement first (Reclast label, Warnings and Precautions: calcium and vitamin D before
treatment; cds_service/knowledge/safety.yaml ``bisphosphonate-vitamin-d``). With stale or no
renal data, ``bisphosphonate-renal`` stays a warning and its text says the label asks for a
creatinine clearance before each infusion."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cds_service.knowledge.safety import load_table
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import ATC, drug, egfr, observation, patient, variants

RULE = "bisphosphonate-vitamin-d"
ZOLEDRONIC_ATC = "M05BA08"
ALENDRONATE_RXNORM = "46041"


def zoledronic_acid() -> dict[str, Any]:
    return drug(ZOLEDRONIC_ATC, rid="zol", system=ATC)


def vitamin_d(value: float, unit: str = "ng/mL", days_ago: float = 30, **kw: Any) -> dict[str, Any]:
    code = "14635-7" if unit == "nmol/L" else "62292-8"
    res = observation(code, value, unit, days_ago, rid="vitd", flags=kw.get("flags", ()))
    if "low" in kw:
        res["referenceRange"] = [{"low": {"value": kw["low"], "unit": unit}}]
    return res


@pytest.mark.parametrize(
    "result",
    [
        vitamin_d(12),
        vitamin_d(19.9),
        vitamin_d(30, unit="nmol/L"),  # 12 ng/mL
        vitamin_d(25, low=30),  # above the guideline cut-off, below the laboratory's range
        vitamin_d(25, flags=("L",)),
    ],
)
def test_a_low_vitamin_d_before_zoledronic_acid_is_a_warning(result: dict[str, Any]) -> None:
    assert variants(RULE, patient(), egfr(80), result, zoledronic_acid()) == ["supplement-first"]


@pytest.mark.parametrize(
    "result",
    [
        vitamin_d(20),  # at the cut-off: not below it
        vitamin_d(75, unit="nmol/L"),  # 30 ng/mL
        vitamin_d(12, days_ago=200),  # older than 180 days: not current data
    ],
)
def test_a_sufficient_or_old_vitamin_d_is_silent(result: dict[str, Any]) -> None:
    assert variants(RULE, patient(), egfr(80), result, zoledronic_acid()) == []


def test_no_vitamin_d_result_is_silent_and_oral_bisphosphonates_are_not_checked() -> None:
    assert variants(RULE, patient(), egfr(80), zoledronic_acid()) == []
    assert variants(RULE, patient(), egfr(80), vitamin_d(10), drug(ALENDRONATE_RXNORM)) == []


def test_the_rule_is_a_precaution_citing_the_label() -> None:
    rule = load_table()[RULE]
    assert list(rule.drugs) == ["zoledronic-acid"]
    assert all(row.label is None for row in rule.rows)
    card = yaml.safe_load((DEFAULT_CARDS_DIR / f"{RULE}.yaml").read_text(encoding="utf-8"))
    assert card["variants"]["supplement-first"]["indicator"] == "warning"
    assert "5a9b3737-9ce6-4a89-b76e-6aab79eba9cf" in card["source"]["url"]


# ------------------------------------------------ stale or no renal data (bisphosphonate-renal)


def test_stale_or_missing_renal_data_stays_a_warning_that_names_the_label_rule() -> None:
    assert variants(
        "bisphosphonate-renal", patient(), egfr(80, days_ago=400), zoledronic_acid()
    ) == ["stale"]
    assert variants("bisphosphonate-renal", patient(), zoledronic_acid()) == ["unknown"]
    card = yaml.safe_load(
        (DEFAULT_CARDS_DIR / "bisphosphonate-renal.yaml").read_text(encoding="utf-8")
    )
    for variant in ("stale", "unknown"):
        assert card["variants"][variant]["indicator"] == "warning"
        assert "before each infusion" in card["variants"][variant]["detail"]["en"]
        assert "avant chaque perfusion" in card["variants"][variant]["detail"]["fr"]
