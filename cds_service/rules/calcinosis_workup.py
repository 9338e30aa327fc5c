"""Calcinosis work-up: the tests that tell dystrophic from metastatic calcinosis.

Sources: seed 003 (calcinosis cutis, patient information): blood tests for calcium and
phosphate, parathyroid hormone and vitamin D, metabolic tests for renal function; seed 004
(patient guide 2025): calcium, phosphorus, PTH and vitamin D, regular biological follow-up.
Evidence level: expert practice described in patient information.

When: active documented calcinosis and no recent (12 months) result for at least one of:
calcium (total or ionised), phosphate, PTH, 25-OH vitamin D, renal function (eGFR or
creatinine).
Then: an `info` card naming the missing tests, with one ServiceRequest suggestion each.
"""

from __future__ import annotations

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.loader import thresholds
from cds_service.rules.base import Finding

RULE_ID = "calcinosis-workup"
# Test -> (lab concepts that count as done, value set of the order to suggest).
TESTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("calcium", "calcium-ionised"), "calcium-order"),
    (("phosphate",), "phosphate-order"),
    (("pth",), "pth-order"),
    (("vitamin-d",), "vitamin-d-order"),
    (("egfr", "creatinine"), "renal-function-order"),
)


def missing_tests(record: PatientRecord) -> list[str]:
    """Order value sets of the tests without a recent result."""
    max_days = thresholds()["calcinosis_workup"]["max_age_days"]
    missing = []
    for concepts, order in TESTS:
        recent = [
            lab
            for concept in concepts
            if (lab := record.labs.get(concept)) is not None
            and (record.now - lab.when).days <= max_days
        ]
        if not recent:
            missing.append(order)
    return missing


def evaluate(record: PatientRecord) -> list[Finding]:
    calcinosis = record.conditions_in("calcinosis")
    if not calcinosis:
        return []
    missing = missing_tests(record)
    if not missing:
        return []
    # A result in a unit the service cannot read is listed, so the card says why it is missing.
    tested = {concept for concepts, _order in TESTS for concept in concepts}
    notes = [n for n in record.notes if n.concept in tested]
    return [
        Finding(
            RULE_ID, "missing-tests", facts={"missing": missing}, evidence=(*calcinosis, *notes)
        )
    ]
