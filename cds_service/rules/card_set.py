"""The card set, treatment-safety half: one card per order, standing interactions quiet.

Issue 12, point 2 ("one safety card per drug"; the one info card is info_card.py's, which runs
before this step). A pure
step between the rules and the cards: findings in, findings out, no I/O (the memory of what
was shown is suppression.py's).

One card per order
    When: several treatment-safety findings name the same order (the same MedicationRequest,
    ``facts["drug"].ref``), e.g. colchicine-renal and colchicine-interaction on one colchicine
    order, bisphosphonate-renal and bisphosphonate-oesophageal on one alendronate order.
    Then: one finding, led by the most severe (critical, then warning, then info; among
    equals a finding about the drug itself before an interaction, then the order in which the
    service lists its rules). The lead keeps its rule id, variant and facts: the card's topic,
    text and feedback are the lead rule's. The others go in ``also`` (one "Also:" line each
    on the card, their suggestions kept, duplicates removed); the evidence is the union of all.

Standing interactions at patient-view
    When: at patient-view, a card made only of interaction findings (knowledge/safety.yaml
    ``type: interaction``) between two orders already active (no draft), none critical.
    Then: the finding is marked ``quiet_unless_changed``: it is shown when its evidence
    fingerprint differs from the one last shown for this patient, order and rule (a first
    showing counts as changed), so once, then again only when something changes
    (suppression.py). The order hooks show interaction cautions whenever one of the two drugs
    is ordered (treatment_safety.py), as before. Seed 002 itself recommends diltiazem and
    colchicine for calcinosis: their caution at every chart opening taught clinicians to
    ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from cds_service.fhir.record import MedicationFact
from cds_service.knowledge.safety import load_table
from cds_service.rules.base import Finding

SEVERITY = ("critical", "warning", "info")  # most severe first (cards.INDICATORS)
Indicator = Callable[[Finding], str]


def interaction_rules() -> frozenset[str]:
    """The rules of the safety table that are about a pair of orders."""
    return frozenset(rule.id for rule in load_table().values() if rule.interaction)


def order_of(finding: Finding) -> MedicationFact | None:
    """The order a finding is about (None for a finding about the patient or the data)."""
    drug = finding.facts.get("drug")
    return drug if isinstance(drug, MedicationFact) else None


def compose(
    findings: Iterable[Finding], hook: str, indicator: Indicator, *, quiet_standing: bool = True
) -> list[Finding]:
    """One finding per order (the others in its ``also``), standing interactions marked at
    patient-view (unless `quiet_standing` is off: CDS_QUIET_STANDING_INTERACTIONS). `indicator`
    gives a finding's card indicator (its card content's, cards/<rule>.yaml). Findings about no
    order are unchanged; each merged finding takes the place of the first finding about its
    order."""
    findings = list(findings)
    interactions = interaction_rules()
    groups: dict[str, list[int]] = {}
    for i, finding in enumerate(findings):
        order = order_of(finding)
        if order is not None:
            groups.setdefault(order.ref, []).append(i)
    first = {members[0]: members for members in groups.values()}
    composed = []
    for i, finding in enumerate(findings):
        if order_of(finding) is None:
            composed.append(finding)
        elif i in first:  # the others of its order are merged into it
            merged = _merge([findings[j] for j in first[i]], indicator, interactions)
            standing = quiet_standing and hook == "patient-view"
            if standing and _standing(merged, indicator, interactions):
                merged = replace(merged, quiet_unless_changed=True)
            composed.append(merged)
    return composed


def _merge(
    same_order: list[Finding], indicator: Indicator, interactions: frozenset[str]
) -> Finding:
    if len(same_order) == 1:
        return same_order[0]
    ranked = sorted(
        range(len(same_order)),
        key=lambda i: (
            SEVERITY.index(indicator(same_order[i])),
            same_order[i].rule in interactions,  # the drug's own finding before an interaction
            i,  # then the service's rule order
        ),
    )
    lead, *others = (same_order[i] for i in ranked)
    evidence: list[Any] = []
    for finding in (lead, *others):
        evidence.extend(e for e in finding.evidence if e not in evidence)
    return replace(lead, evidence=tuple(evidence), also=tuple(others))


def _standing(finding: Finding, indicator: Indicator, interactions: frozenset[str]) -> bool:
    """Only interactions between two active orders, none of them critical."""
    return all(
        part.rule in interactions
        and indicator(part) != "critical"
        and all(
            isinstance(order, MedicationFact) and not order.draft
            for order in (part.facts.get("drug"), part.facts.get("other"))
        )
        for part in (finding, *finding.also)
    )
