"""Suggestions that agree with the rest of the answer (issue 12, point 1).

A card may propose a drug in one click (a ``propose-medication`` suggestion in cards/*.yaml:
colchicine or minocycline for inflammatory calcinosis, topical sodium thiosulfate for small
lesions). The same response must not then warn against that drug, nor propose a drug the
patient already takes. Before a drug is proposed it is therefore treated as a draft order of
this patient and run through the treatment-safety table (knowledge/safety.yaml, the engine of
treatment_safety.py): its renal rows, its condition and laboratory rows, and its interactions
with every current order.

Sources: those of each row of the table (drug labels and seeds, cited there); this module adds
no clinical fact of its own.

When: a value set that a card of this response may propose, and either
- the patient already has an order of it (an active or on-hold MedicationRequest, or a draft
  under review; any product of the value set counts), or
- a row of the treatment-safety table would fire for a draft order of it (or a table rule could
  not be run for it: silence must never read as "safe"). An order-time precaution
  (`at_order` rows, issue 14: minocycline in SSc) does not hold at patient-view, where
  proposals are checked, so it withholds nothing: it is shown when the proposal is ordered.
Then: a `Withheld` per value set, with the facts that explain it (the current orders, or the
safety findings and the record facts they rest on). The renderer drops the suggestion and says
why in one line. Pure: no I/O, no text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cds_service.fhir.record import ConditionFact, LabResult, MedicationFact
from cds_service.knowledge.chart import Chart
from cds_service.knowledge.renal import RenalStatus
from cds_service.knowledge.safety import load_table
from cds_service.rules.base import Finding
from cds_service.rules.predicates import all_orders
from cds_service.rules.treatment_safety import PROPOSED_PREFIX, evaluate_rule
from cds_service.terminology import Match

log = logging.getLogger(__name__)

# The reference of the hypothetical draft order: parentheses and spaces cannot occur in a FHIR
# id, so it never equals a real order's reference.
PROPOSED_REF = PROPOSED_PREFIX + "{valueset})"


@dataclass(frozen=True)
class Withheld:
    """A drug a card must not propose to this patient, and why.

    `current`: the patient's orders of it (active, on-hold, or drafts under review); when there
    are, the safety table is not consulted (the cards about those orders say the rest).
    `findings`: what the treatment-safety table says about a draft order of it.
    `unchecked`: the table rules that could not be run for it."""

    valueset: str
    current: tuple[MedicationFact, ...] = ()
    findings: tuple[Finding, ...] = ()
    unchecked: tuple[str, ...] = ()

    @property
    def reasons(self) -> tuple[Any, ...]:
        """The record facts the safety findings rest on, each once: the renal status, then the
        conditions, the laboratory results, and the current orders it would interact with."""
        found: list[Any] = []
        for finding in self.findings:
            renal = finding.facts.get("renal")
            other = finding.facts.get("other")
            # The eGFR or coded stage a renal status rests on is that status, not another reason.
            behind = (renal.lab, renal.condition) if isinstance(renal, RenalStatus) else ()
            for item in (renal, *finding.evidence, other):
                relevant = isinstance(item, RenalStatus | ConditionFact | LabResult) or (
                    isinstance(item, MedicationFact) and item is other
                )
                if relevant and not any(item is b for b in behind) and item not in found:
                    found.append(item)
        rank = (RenalStatus, ConditionFact, LabResult, MedicationFact)
        return tuple(
            sorted(
                found, key=lambda item: next(i for i, t in enumerate(rank) if isinstance(item, t))
            )
        )


def proposed_order(valueset: str) -> MedicationFact:
    """The drug a card would propose, as a draft order of the patient (no product, no dose)."""
    return MedicationFact(
        ref=PROPOSED_REF.format(valueset=valueset),
        id=None,
        valuesets=frozenset({valueset}),
        match=Match(valueset=valueset, by="code"),
        display=valueset,
        status="draft",
        authored=None,
        resource={},
        draft=True,
    )


def current_orders(record: Chart, valueset: str) -> tuple[MedicationFact, ...]:
    """The patient's orders of a value set: active and on-hold, and the drafts under review."""
    return tuple(m for m in all_orders(record) if valueset in m.valuesets)


def safety_of(record: Chart, valueset: str) -> tuple[tuple[Finding, ...], tuple[str, ...]]:
    """What the treatment-safety table would say if `valueset` were ordered now: the findings
    about that draft order, and the table rules that could not be run."""
    proposed = proposed_order(valueset)
    # The draft is the only order under review; every current order (drafts under review
    # included) is a possible interaction partner.
    as_if = replace(
        record,
        medications=(*record.medications, *(record.drafts or ())),
        drafts=(proposed,),
    )
    findings: list[Finding] = []
    unchecked: list[str] = []
    for rule_id, rule in load_table().items():
        try:
            fired = evaluate_rule(rule, as_if)
        except Exception as exc:  # noqa: BLE001 - a rule that fails blocks the proposal
            log.error("rule %s could not check a proposal: %s", rule_id, type(exc).__name__)
            unchecked.append(rule_id)
            continue
        findings += [f for f in fired if proposed in (f.facts.get("drug"), f.facts.get("other"))]
    return tuple(findings), tuple(unchecked)


def withheld_proposals(record: Chart, valuesets: Iterable[str]) -> Mapping[str, Withheld]:
    """Of the value sets the cards of a response may propose, those not to propose to this
    patient, and why."""
    withheld: dict[str, Withheld] = {}
    for valueset in sorted(set(valuesets)):
        current = current_orders(record, valueset)
        if current:
            withheld[valueset] = Withheld(valueset, current=current)
            continue
        findings, unchecked = safety_of(record, valueset)
        if findings or unchecked:
            withheld[valueset] = Withheld(valueset, findings=findings, unchecked=unchecked)
    return withheld
