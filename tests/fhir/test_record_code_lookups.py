"""The record builder looks each distinct Observation code up once per request.

A long record repeats a few codes hundreds of times (issue 7: cost grows with the prefetch, not
with the knowledge base times the prefetch). No timing: the lookups are counted.
"""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.terminology import Terminology
from tests.helpers import LOINC, TERMINOLOGY, egfr, observation, patient, record


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Terminology.match call on an Observation code, by resource type asked."""
    calls: list[str] = []
    match = Terminology.match

    def counting(self: Terminology, concept: Any, applies_to: str) -> Any:
        calls.append(applies_to)
        return match(self, concept, applies_to)

    monkeypatch.setattr(Terminology, "match", counting)
    return calls


def test_each_distinct_code_is_looked_up_once(lookups: list[str]) -> None:
    values = [egfr(40 + i, days_ago=10 + i, rid=f"e{i}") for i in range(200)]
    values += [observation("8867-4", 70 + i % 9, "/min", 5 + i, f"hr{i}") for i in range(300)]
    built = record(patient(), *values)
    assert built.labs["egfr"].value == 40  # the newest, as without the memo
    assert lookups.count("Observation") == 2


def test_codes_differing_in_display_are_looked_up_apart(lookups: list[str]) -> None:
    named = egfr(30, days_ago=5, rid="named")
    named["code"]["coding"][0]["display"] = "eGFR CKD-EPI 2021"
    built = record(patient(), egfr(50, days_ago=9, rid="plain"), named)
    assert lookups.count("Observation") == 2
    assert built.labs["egfr"].ref == "Observation/named"


def test_a_malformed_coding_is_not_memoised_and_not_recognised() -> None:
    odd = egfr(30, days_ago=5, rid="odd")
    odd["code"]["coding"][0]["system"] = [LOINC]  # not a string: unhashable, not a code
    twice = egfr(31, days_ago=6, rid="odd2")
    twice["code"]["coding"][0]["code"] = {"c": "98979-8"}
    built = record(patient(), odd, twice, egfr(60, days_ago=40, rid="good"))
    assert built.labs["egfr"].ref == "Observation/good"
    assert TERMINOLOGY.match(odd["code"], "Observation") == []
