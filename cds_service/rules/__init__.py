"""Clinical rules: pure functions from a patient record to findings.

Each rule is one module with a docstring that quotes its sources and states When / Then, a
``RULE_ID`` and an ``evaluate(record) -> list[Finding]``. A rule never sees raw JSON, never
builds card text and never does I/O. `RULES` is the registry the service definitions name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cds_service.fhir.record import PatientRecord
from cds_service.rules import aluminium_hydroxide_renal, calcinosis_context
from cds_service.rules.base import Finding

Rule = Callable[[PatientRecord], list[Finding]]

RULES: dict[str, Rule] = {
    module.RULE_ID: module.evaluate for module in (aluminium_hydroxide_renal, calcinosis_context)
}


def run(rule_ids: Iterable[str], record: PatientRecord) -> list[Finding]:
    """Run the named rules on one record, in order."""
    findings: list[Finding] = []
    for rule_id in rule_ids:
        findings.extend(RULES[rule_id](record))
    return findings


__all__ = ["RULES", "Finding", "run"]
