"""Clinical rules: pure functions from a patient record to findings.

Each calcinosis rule is one module with a docstring that quotes its sources and states When /
Then, a ``RULE_ID`` and an ``evaluate(record) -> list[Finding]``. The treatment-safety rules are
rows of one data table (knowledge/safety.yaml) read by one engine (treatment_safety.py). A rule
never sees raw JSON, never builds card text and never does I/O. `RULES` is the registry the
service definitions name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from cds_service.knowledge.chart import Chart
from cds_service.knowledge.safety import load_table
from cds_service.rules import (
    calcinosis_risk_screening,
    calcinosis_synthesis,
    calcinosis_type,
)
from cds_service.rules.base import Finding, Reads
from cds_service.rules.data_notes import DATA_NOT_READ
from cds_service.rules.treatment_safety import reads, table_rules

log = logging.getLogger(__name__)
Rule = Callable[[Chart], list[Finding]]

# Calcinosis rules, one module each (calcinosis_context, calcinosis_lesion and calcinosis_workup
# are fact producers of calcinosis_synthesis, not rules); treatment-safety rules, one engine over
# a data table. Their findings are composed into cards by info_card.py and card_set.py.
MODULES = (
    calcinosis_synthesis,
    calcinosis_risk_screening,
    calcinosis_type,
)
RULES: dict[str, Rule] = {
    **{module.RULE_ID: module.evaluate for module in MODULES},
    **table_rules(),
}
# What each rule reads from the chart (each module's READS; a table rule's from its criteria).
READS: dict[str, Reads] = {
    **{module.RULE_ID: module.READS for module in MODULES},
    **{rule_id: reads(rule) for rule_id, rule in load_table().items()},
}


# The card shown when a check could not run (cards/check-failed.yaml); not a clinical rule.
CHECK_FAILED = "check-failed"
# Cards the service itself issues about the checks, not clinical rules.
SERVICE_CARDS = (CHECK_FAILED, DATA_NOT_READ)


def run(rule_ids: Iterable[str], record: Chart) -> list[Finding]:
    """Run the named rules on one record, in order. A rule that raises does not silence the
    others: it is logged (its exception type only, never patient data) and reported by a
    `check-failed` finding, since silence must never read as "safe"."""
    findings: list[Finding] = []
    for rule_id in rule_ids:
        try:
            findings.extend(RULES[rule_id](record))
        except Exception as exc:  # noqa: BLE001 - any failure of one rule is contained
            log.error("rule %s could not run: %s", rule_id, type(exc).__name__)
            findings.append(Finding(CHECK_FAILED, "rule-error", facts={"check": rule_id}))
    return findings


__all__ = ["CHECK_FAILED", "DATA_NOT_READ", "READS", "RULES", "SERVICE_CARDS", "Finding", "run"]
