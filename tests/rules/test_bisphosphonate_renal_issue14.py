"""Issue 14, bisphosphonates: renal rows for ibandronate, pamidronate and etidronate, and the
zoledronic acid contraindication in acute kidney injury (cds_service/knowledge/safety.yaml,
``bisphosphonate-renal``; sources and label wording in docs/knowledge.md)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.knowledge.chart import Chart
from cds_service.rules import RULES
from tests.helpers import ATC, ICD10CM, SNOMED, condition, drug, egfr, patient, record, when

RULE = "bisphosphonate-renal"
IBANDRONATE = "M05BA06"
PAMIDRONATE = "M05BA03"
ETIDRONATE = "M05BA01"
ZOLEDRONIC_ACID = "M05BA08"


def variants(rec: Chart) -> list[str]:
    return [f.variant for f in RULES[RULE](rec)]


def order(atc: str) -> dict[str, Any]:
    return drug(atc, system=ATC)


def aki(days_ago: float | None = None, clinical: str = "active", system: str = ICD10CM) -> Any:
    res = condition(system, "N17.9" if system == ICD10CM else "14669001", "aki", clinical)
    if days_ago is not None:
        res["recordedDate"] = when(days_ago)
    return res


@pytest.mark.parametrize(
    ("atc", "value", "expected"),
    [
        (IBANDRONATE, 24, ["not-recommended"]),
        (IBANDRONATE, 30, []),  # the label's limit is "below 30"
        (PAMIDRONATE, 26, ["severe-not-studied"]),
        (PAMIDRONATE, 45, []),
        (ETIDRONATE, 45, ["reduce-or-avoid"]),
        (ETIDRONATE, 75, []),
    ],
)
def test_the_new_drugs_have_their_renal_limit(atc: str, value: float, expected: list[str]) -> None:
    assert variants(record(patient(), order(atc), egfr(value))) == expected


@pytest.mark.parametrize("atc", [IBANDRONATE, PAMIDRONATE, ETIDRONATE])
def test_the_new_drugs_have_stale_and_unknown_rows(atc: str) -> None:
    assert variants(record(patient(), order(atc), egfr(15, days_ago=500))) == ["stale"]
    assert variants(record(patient(), order(atc))) == ["unknown"]


def test_the_limit_reaches_the_card_facts() -> None:
    (finding,) = RULES[RULE](record(patient(), order(ETIDRONATE), egfr(40)))
    assert finding.facts["limit"] == 60


@pytest.mark.parametrize("system", [ICD10CM, SNOMED])
def test_zoledronic_acid_in_current_aki_is_critical_whatever_the_egfr(system: str) -> None:
    rec = record(patient(), order(ZOLEDRONIC_ACID), aki(5, system=system), egfr(52, days_ago=5))
    assert variants(rec) == ["contraindicated-aki"]
    assert RULES[RULE](rec)[0].facts["criterion"].valuesets >= {"acute-kidney-injury"}


def test_an_undated_active_aki_counts() -> None:
    assert variants(record(patient(), order(ZOLEDRONIC_ACID), aki(), egfr(70))) == [
        "contraindicated-aki"
    ]


def test_a_resolved_or_old_aki_is_not_current() -> None:
    resolved = record(patient(), order(ZOLEDRONIC_ACID), aki(5, "resolved"), egfr(70))
    assert variants(resolved) == []
    old = record(patient(), order(ZOLEDRONIC_ACID), aki(120), egfr(70))
    assert variants(old) == []


def test_aki_is_read_for_zoledronic_acid_only() -> None:
    # ibandronate: the AKI is an unstaged renal insufficiency (< 60), not below its limit of 30
    assert variants(record(patient(), order(IBANDRONATE), aki(5), egfr(52))) == []
