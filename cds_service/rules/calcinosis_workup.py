"""Calcinosis work-up: the tests that tell dystrophic from metastatic calcinosis.

Sources: seed 003 (calcinosis cutis, patient information): blood tests for calcium and
phosphate, parathyroid hormone and vitamin D, metabolic tests for renal function; seed 004
(patient guide 2025): calcium, phosphorus, PTH and vitamin D, regular biological follow-up.
Evidence level: expert practice described in patient information.

Reads: the tests without a recent (12 months) result among calcium (total or ionised),
phosphate, PTH, 25-OH vitamin D and renal function (eGFR or creatinine). A fact producer for the
`calcinosis-synthesis` card (rules/calcinosis_synthesis.py), which names the missing tests with
one ServiceRequest suggestion each; its former card, `calcinosis-workup`, was merged into that
card (issue 12).
"""

from __future__ import annotations

from typing import Any

from cds_service.knowledge.chart import Chart
from cds_service.knowledge.loader import thresholds
from cds_service.rules.base import Reads
from cds_service.rules.predicates import recent_lab

# Test -> (lab concepts that count as done, value set of the order to suggest).
TESTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("calcium", "calcium-ionised"), "calcium-order"),
    (("phosphate",), "phosphate-order"),
    (("pth",), "pth-order"),
    (("vitamin-d",), "vitamin-d-order"),
    (("egfr", "creatinine"), "renal-function-order"),
)
READS = Reads(observations=tuple(c for concepts, _order in TESTS for c in concepts))


def missing_tests(record: Chart) -> list[str]:
    """Order value sets of the tests without a recent result."""
    max_days = thresholds()["calcinosis_workup"]["max_age_days"]
    missing = []
    for concepts, order in TESTS:
        if not any(recent_lab(record, concept, max_days) for concept in concepts):
            missing.append(order)
    return missing


def unit_notes(record: Chart) -> list[Any]:
    """Work-up results in a unit the service cannot read, so the card says why they count as
    missing."""
    tested = {concept for concepts, _order in TESTS for concept in concepts}
    return [n for n in record.notes if n.concept in tested]
