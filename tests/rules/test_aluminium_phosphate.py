"""Issue 14, point 11 (aluminium and low phosphate): an aluminium-containing order with the
latest phosphate within 90 days below the laboratory's range (Observation.referenceRange.low,
or flagged L / LL) is a warning "aluminium binds phosphate" (seed 002: severe phosphate
depletion; Alu-Cap 475 mg UK SmPC 4.3 contraindicates it in hypophosphataemia, kept a warning
as the issue asks). The criterion is generic: ``lab_below_range: {concept, max_age_days}``
(cds_service/knowledge/safety.yaml ``aluminium-phosphate``; rules/treatment_safety.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cds_service.hooks.services import SERVICES_FILE, _flatten
from cds_service.knowledge.chart import Chart
from cds_service.knowledge.safety import CRITERIA, _check_criterion, load_table
from cds_service.rules import RULES
from cds_service.rules.treatment_safety import EVALUATORS, holds
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import drug, egfr, observation, patient, record

RULE = "aluminium-phosphate"
ALUMINIUM_RXNORM = "612"
PHOSPHATE_LOINC = "2777-1"


def phosphate(
    value: float,
    days_ago: float = 10,
    low: float | None = 2.5,
    flags: tuple[str, ...] = (),
) -> dict[str, Any]:
    res = observation(PHOSPHATE_LOINC, value, "mg/dL", days_ago, rid="phos", flags=flags)
    if low is not None:
        res["referenceRange"] = [{"low": {"value": low, "unit": "mg/dL"}}]
    return res


def aluminium() -> dict[str, Any]:
    return drug(ALUMINIUM_RXNORM, rid="alu")


def chart(*resources: Any) -> Chart:
    return record(patient(), egfr(85), *resources)


def variants(*resources: Any) -> list[str]:
    return [f.variant for f in RULES[RULE](chart(*resources))]


# ------------------------------------------------------------------------- the rule


def test_aluminium_with_a_phosphate_below_range_is_a_warning() -> None:
    findings = RULES[RULE](chart(phosphate(2.1), aluminium()))
    assert [f.variant for f in findings] == ["low-phosphate"]
    # No critical row: the SmPC's contraindication is left to the clinical reviewers.
    assert all(row.label is None for row in load_table()[RULE].rows)


def test_a_low_flag_without_a_range_counts() -> None:
    assert variants(phosphate(2.8, low=None, flags=("L",)), aluminium()) == ["low-phosphate"]
    assert variants(phosphate(2.8, low=None, flags=("LL",)), aluminium()) == ["low-phosphate"]


@pytest.mark.parametrize(
    "result",
    [
        phosphate(2.5),  # at the range low: not below it
        phosphate(3.4),
        phosphate(2.0, days_ago=120),  # older than 90 days: not current data
        phosphate(2.0, low=None),  # no range and no flag: nothing to judge by
    ],
)
def test_a_normal_old_or_unjudged_phosphate_is_silent(result: dict[str, Any]) -> None:
    assert variants(result, aluminium()) == []


def test_no_aluminium_order_no_finding() -> None:
    assert variants(phosphate(2.0)) == []


# ------------------------------------------------------------------ the generic criterion


def test_the_criterion_is_generic_and_names_its_evidence() -> None:
    assert "lab_below_range" in CRITERIA
    assert "lab_below_range" in EVALUATORS
    assert CRITERIA["lab_below_range"].labs({"concept": "phosphate", "max_age_days": 90}) == (
        "phosphate",
    )
    ok, evidence = holds(
        {"lab_below_range": {"concept": "phosphate", "max_age_days": 90}},
        chart(phosphate(2.1)),
    )
    assert ok
    assert [e.concept for e in evidence] == ["phosphate"]
    ok, evidence = holds(
        {"lab_below_range": {"concept": "pth", "max_age_days": 90}}, chart(phosphate(2.1))
    )
    assert not ok
    assert evidence == []


def test_the_criterion_checks_its_arguments() -> None:
    _check_criterion("test", {"lab_below_range": {"concept": "phosphate", "max_age_days": 90}})
    with pytest.raises(ValueError, match="lab_below_range: expected keys"):
        _check_criterion("test", {"lab_below_range": {"concept": "phosphate"}})
    with pytest.raises(ValueError, match="lab_below_range: expected"):
        _check_criterion("test", {"lab_below_range": {"concept": "", "max_age_days": 90}})


# ------------------------------------------------------------------ wiring


def test_every_service_runs_the_rule_and_its_card_exists() -> None:
    for service in yaml.safe_load(SERVICES_FILE.read_text(encoding="utf-8")):
        assert RULE in _flatten(service["rules"]), service["id"]
    card = yaml.safe_load((DEFAULT_CARDS_DIR / f"{RULE}.yaml").read_text(encoding="utf-8"))
    assert card["variants"]["low-phosphate"]["indicator"] == "warning"
    assert "check phosphate" in card["variants"]["low-phosphate"]["summary"]["en"]
