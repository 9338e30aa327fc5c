"""The shared predicates of cds_service/rules/predicates.py, at their edges."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cds_service.rules.predicates import (
    all_orders,
    at_least,
    below,
    conditions_of,
    is_positive,
    is_recent,
    recent_lab,
    says,
)
from tests.conftest import NOW
from tests.helpers import ICD10CM, SNOMED, antibody, condition, drug, egfr, patient, record


@pytest.mark.parametrize(
    ("text", "words", "expected"),
    [
        ("calcinose inflammatoire", ("inflammatoire",), True),
        ("non inflammatory", ("inflammatory",), True),
        ("ulcerated lesion", ("ulcer",), False),  # whole words only
        ("not detected", ("not detected",), True),  # phrases too
        ("undetected", ("detected",), False),
    ],
)
def test_says_matches_whole_words(text: str, words: tuple[str, ...], expected: bool) -> None:
    assert says(text, words) is expected


def test_recent_counts_whole_days_up_to_the_limit() -> None:
    assert is_recent(NOW - timedelta(days=365, hours=23), NOW, 365)
    assert not is_recent(NOW - timedelta(days=366), NOW, 365)
    rec = record(patient(), egfr(50, days_ago=100))
    assert recent_lab(rec, "egfr", 100) is rec.labs["egfr"]
    assert recent_lab(rec, "egfr", 99) is None
    assert recent_lab(rec, "creatinine", 1000) is None


def test_below_and_at_least_split_at_the_value() -> None:
    lab = record(patient(), egfr(30)).labs["egfr"]
    assert not below(lab, 30)
    assert at_least(lab, 30)
    assert below(lab, 30.1)
    assert not at_least(lab, 30.1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Positive", True), ("Negative", False), ("Not detected", False), ("Detected", True)],
)
def test_a_qualitative_result_is_positive_by_its_words(text: str, expected: bool) -> None:
    rec = record(patient(), antibody("31290-0", text))
    assert is_positive(rec.results["anti-centromere"]) is expected


def test_conditions_of_several_value_sets_and_every_order() -> None:
    rec = record(
        patient(),
        condition(ICD10CM, "L94.2", rid="c"),
        condition(SNOMED, "266261006", rid="r"),
        drug("2683", "k"),
    )
    found = conditions_of(rec, ("raynaud", "calcinosis", "hypotension"))
    assert [c.ref for c in found] == ["Condition/r", "Condition/c"]
    assert [o.ref for o in all_orders(rec)] == ["MedicationRequest/k"]
