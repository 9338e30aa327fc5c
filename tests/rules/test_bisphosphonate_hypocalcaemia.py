"""Issue 14, point 1 (hypocalcaemia): zoledronic acid with a current low calcium is critical
(the zoledronic acid 5 mg label contraindicates it in hypocalcaemia), an oral bisphosphonate
a warning (correct hypocalcaemia before starting). "Low" is the laboratory's own range
(Observation.referenceRange.low, or flagged L / LL), a total calcium corrected for a same-day
albumin first (cds_service/knowledge/safety.yaml ``bisphosphonate-hypocalcaemia``;
rules/predicates.py ``low_calcium``; fhir/facts.py ``LabResult.below_range``)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.knowledge.chart import Chart
from cds_service.knowledge.safety import _check_criterion, load_table
from cds_service.rules import RULES
from cds_service.rules.predicates import high_calcium, low_calcium
from tests.helpers import ATC, RXNORM, drug, egfr, observation, patient, record

RULE = "bisphosphonate-hypocalcaemia"
ZOLEDRONIC_ACID = "M05BA08"
IBANDRONATE = "M05BA06"
ETIDRONATE = "M05BA01"
ALENDRONATE_RXNORM = "46041"
RISEDRONATE_RXNORM = "73056"


def calcium(
    value: float,
    days_ago: float = 5,
    low: float | None = 8.6,
    unit: str = "mg/dL",
    flags: tuple[str, ...] = (),
    code: str = "17861-6",
) -> dict[str, Any]:
    res = observation(code, value, unit, days_ago, rid="ca", flags=flags)
    if low is not None:
        res["referenceRange"] = [{"low": {"value": low, "unit": unit}}]
    return res


def ionised(value: float, days_ago: float = 5, low: float | None = 1.15) -> dict[str, Any]:
    res = observation("1995-0", value, "mmol/L", days_ago, rid="ica")
    if low is not None:
        res["referenceRange"] = [{"low": {"value": low, "unit": "mmol/L"}}]
    return res


def albumin(value: float, days_ago: float = 5) -> dict[str, Any]:
    return observation("1751-7", value, "g/L", days_ago, rid="alb")


def zoledronic() -> dict[str, Any]:
    return drug(ZOLEDRONIC_ACID, system=ATC, rid="zol")


def chart(*resources: Any) -> Chart:
    return record(patient(), egfr(80), *resources)


def variants(*resources: Any) -> list[str]:
    return [f.variant for f in RULES[RULE](chart(*resources))]


# ------------------------------------------------------------------------- the range low


def test_the_record_reads_the_range_low_in_the_canonical_unit() -> None:
    lab = chart(calcium(2.0, low=2.15, unit="mmol/L")).labs["calcium"]
    assert lab.low == pytest.approx(8.617, abs=0.01)  # 2.15 mmol/L in mg/dL
    assert lab.below_range


def test_below_range_by_flag_or_limit() -> None:
    assert chart(calcium(8.0)).labs["calcium"].below_range
    assert not chart(calcium(8.6)).labs["calcium"].below_range
    assert chart(calcium(9.0, low=None, flags=("L",))).labs["calcium"].below_range
    assert chart(calcium(9.0, low=None, flags=("LL",))).labs["calcium"].below_range
    assert not chart(calcium(8.0, low=None)).labs["calcium"].below_range
    assert not chart(calcium(8.0)).labs["calcium"].above_range


# ------------------------------------------------------------------------------ the rule


def test_zoledronic_acid_with_a_low_calcium_is_critical() -> None:
    assert variants(calcium(8.0), zoledronic()) == ["contraindicated"]


@pytest.mark.parametrize(
    "order",
    [
        drug(ALENDRONATE_RXNORM, system=RXNORM),
        drug(RISEDRONATE_RXNORM, system=RXNORM),
        drug(IBANDRONATE, system=ATC),
        drug(ETIDRONATE, system=ATC),
    ],
)
def test_an_oral_bisphosphonate_with_a_low_calcium_is_a_warning(order: dict[str, Any]) -> None:
    assert variants(calcium(8.2), order) == ["correct-first"]


def test_the_ibandronate_injection_is_not_an_oral_form() -> None:
    res = drug(IBANDRONATE, system=ATC)
    res["dosageInstruction"] = [{"text": "3 mg intravenously every 3 months"}]
    assert variants(calcium(8.2), res) == []


def test_a_normal_or_old_or_absent_calcium_is_silent() -> None:
    assert variants(calcium(9.4), zoledronic()) == []
    assert variants(calcium(8.0, days_ago=120), zoledronic()) == []
    assert variants(zoledronic()) == []


def test_a_low_albumin_corrects_a_low_calcium_back_into_range() -> None:
    # 8.2 mg/dL with 30 g/L of albumin: corrected 8.2 + 1.0 x (4.0 - 3.0) = 9.2 mg/dL.
    assert variants(calcium(8.2), albumin(30), zoledronic()) == []
    # An albumin of another day does not correct it.
    assert variants(calcium(8.2, days_ago=5), albumin(30, days_ago=20), zoledronic()) == [
        "contraindicated"
    ]


def test_a_corrected_calcium_drops_the_measured_low_flag() -> None:
    assert variants(calcium(8.2, flags=("L",)), albumin(30), zoledronic()) == []


def test_a_normal_albumin_keeps_a_low_calcium_low_with_its_evidence() -> None:
    rec = chart(calcium(8.0), albumin(42))
    assert [lab.concept for lab in low_calcium(rec, 90)] == ["calcium", "albumin"]
    assert high_calcium(rec, 90) == []


def test_the_laboratory_corrected_calcium_is_not_corrected_again() -> None:
    assert variants(calcium(8.2, code="29265-6"), albumin(30), zoledronic()) == ["contraindicated"]


def test_a_low_ionised_calcium_without_a_total_calcium() -> None:
    assert variants(ionised(1.05), zoledronic()) == ["contraindicated"]
    assert variants(ionised(1.20), zoledronic()) == []


# --------------------------------------------------------------------- the table and grammar


def test_the_critical_row_names_its_label_and_the_oral_rows_their_route() -> None:
    rows = load_table()[RULE].rows
    assert rows[0].variant == "contraindicated"
    assert rows[0].drug == "zoledronic-acid"
    assert "1977d713-4cc7-405e-b4c1-a9a91635eff6" in (rows[0].label or "")
    assert "bf5f96d4-f87c-4968-bed0-a4b5e77f4162" in (rows[0].label or "")
    assert {row.drug for row in rows[1:]} == {
        "alendronate",
        "risedronate",
        "ibandronate",
        "etidronate",
    }
    assert all(row.route == "oral" and row.variant == "correct-first" for row in rows[1:])


def test_the_criterion_checks_its_arguments() -> None:
    _check_criterion("test", {"calcium_below_range": {"max_age_days": 90}})
    with pytest.raises(ValueError, match="calcium_below_range: expected keys"):
        _check_criterion("test", {"calcium_below_range": {}})
