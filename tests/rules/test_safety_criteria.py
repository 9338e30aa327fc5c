"""Criteria of the treatment-safety grammar that several checks share (issue 14): a result
above the laboratory's range, a result at or above a value, no recent result (a screening or
monitoring test the record does not show), and rows limited to parenteral orders."""

from __future__ import annotations

from typing import Any

from cds_service.knowledge.safety import Row, SafetyRule
from cds_service.rules.treatment_safety import _first_row, holds
from tests.helpers import antibody, drug, observation, patient, record

PHOSPHATE_LOINC = "2777-1"
ANTI_CENTROMERE_LOINC = "31290-0"


def phosphate(value: float, days_ago: float = 10, **kwargs: Any) -> dict[str, Any]:
    return observation(PHOSPHATE_LOINC, value, "mg/dL", days_ago, rid="phos", **kwargs)


def check(when: dict[str, Any], *resources: Any) -> bool:
    return holds(when, record(patient(), *resources))[0]


ABOVE = {"lab_above_range": {"concept": "phosphate", "max_age_days": 90}}


def test_above_range_reads_the_range_high_and_the_flag() -> None:
    assert check(ABOVE, phosphate(5.1, high=4.5))
    assert check(ABOVE, phosphate(4.4, flags=("H",)))
    assert not check(ABOVE, phosphate(4.4, high=4.5))
    assert not check(ABOVE, phosphate(5.1))  # no range, no flag: not judged
    assert not check(ABOVE, phosphate(5.1, days_ago=120, high=4.5))  # not current


AT_LEAST = {"lab_at_least": {"concept": "phosphate", "value": 4.5, "max_age_days": 90}}


def test_at_least_is_inclusive_and_recent() -> None:
    assert check(AT_LEAST, phosphate(4.5))
    assert not check(AT_LEAST, phosphate(4.4))
    assert not check(AT_LEAST, phosphate(6.0, days_ago=91))


def test_at_least_never_matches_an_upper_bound() -> None:
    res = phosphate(4.5)
    res["valueQuantity"]["comparator"] = "<"
    assert not check(AT_LEAST, res)


def missing(concept: str, days: int = 365) -> dict[str, Any]:
    return {"no_recent_result": {"concept": concept, "max_age_days": days}}


def test_no_recent_result_for_a_numeric_concept() -> None:
    assert check(missing("phosphate"))
    assert check(missing("phosphate"), phosphate(3.0, days_ago=400))
    assert not check(missing("phosphate"), phosphate(3.0, days_ago=100))


def test_no_recent_result_for_a_qualitative_concept() -> None:
    assert check(missing("anti-centromere"))
    assert not check(missing("anti-centromere"), antibody(ANTI_CENTROMERE_LOINC, "Negative"))


def test_an_unreadable_result_is_the_evidence_of_no_recent_result() -> None:
    unreadable = phosphate(3.0)
    unreadable["valueQuantity"]["unit"] = "furlongs"
    ok, evidence = holds(missing("phosphate"), record(patient(), unreadable))
    assert ok
    assert [e.concept for e in evidence] == ["phosphate"]


def parenteral_rule() -> SafetyRule:
    row = Row({"partner": True}, "v", route="parenteral")
    return SafetyRule("r", ("ibandronate",), (row,), ("s",))


def ibandronate(route_text: str) -> dict[str, Any]:
    res = drug("ibandronate-test", rid="iba")
    res["medicationCodeableConcept"] = {"text": "ibandronate"}
    res["dosageInstruction"] = [{"route": {"text": route_text}}]
    return res


def test_a_parenteral_row_keeps_only_parenteral_orders() -> None:
    for route, expected in (("intravenous", True), ("oral", False)):
        chart = record(patient(), ibandronate(route))
        (order,) = chart.medications
        assert (_first_row(parenteral_rule(), chart, order) is not None) is expected, route
