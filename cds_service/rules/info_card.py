"""The one info card of a patient-view response (issue 12, point 2).

Rules stay pure fact producers, each blind to the others; this step, also pure (no I/O, no
text), runs on a response's findings before the per-order composition of the safety cards
(rules/card_set.py):

- at most one info card about calcinosis: the `calcinosis-synthesis` finding. A calcium or
  vitamin D supplement flagged in calcinosis (`calcium-vitamin-d-calcinosis`, its info row
  `review` of the treatment-safety table; its warning rows stay cards of their own) becomes
  one step of that card (feature `supplement`, the order in its evidence and facts) instead of
  a second info card; without a synthesis card it stays a card of its own;
- the risk-screening card (`calcinosis-risk-screening`, SSc without calcinosis) is never shown
  beside the synthesis card (the rules already exclude each other; this keeps it so).

At the order hooks the findings are left as they are. Showing the risk-screening card at most
once a year per patient needs the store: cds_service/suppression.py. The order of the cards
(critical, warning, then the info card) is the engine's.
"""

from __future__ import annotations

from dataclasses import replace

from cds_service.rules import calcinosis_risk_screening, calcinosis_synthesis
from cds_service.rules.base import Finding

SYNTHESIS = calcinosis_synthesis.RULE_ID
RISK_SCREENING = calcinosis_risk_screening.RULE_ID
# Info findings that become a step of the synthesis card: rule id -> feature (card step).
FOLDED = {"calcium-vitamin-d-calcinosis": "supplement"}
# Only these variants of a folded rule are info (issue 14: the hypercalcaemia, calcium x
# phosphate and calciphylaxis variants of calcium-vitamin-d-calcinosis are warnings, cards of
# their own).
FOLDED_VARIANTS = {"calcium-vitamin-d-calcinosis": frozenset({"review"})}


def folds(finding: Finding) -> bool:
    """The finding becomes a step of the synthesis card."""
    return finding.rule in FOLDED and finding.variant in FOLDED_VARIANTS[finding.rule]


def compose(hook: str, findings: list[Finding]) -> list[Finding]:
    """The findings to render for this hook, in their order."""
    if hook != "patient-view":
        return findings
    synthesis = next((f for f in findings if f.rule == SYNTHESIS), None)
    if synthesis is None:
        return findings
    folded = [f for f in findings if folds(f)]
    merged = _fold(synthesis, folded)
    kept: list[Finding] = []
    for finding in findings:
        if finding is synthesis:
            kept.append(merged)
        elif not folds(finding) and finding.rule != RISK_SCREENING:
            kept.append(finding)
    return kept


def _fold(synthesis: Finding, folded: list[Finding]) -> Finding:
    """The synthesis finding with each folded finding as a step: its feature and its orders."""
    if not folded:
        return synthesis
    features = list(synthesis.facts.get("features", ()))
    for finding in folded:
        if FOLDED[finding.rule] not in features:
            features.append(FOLDED[finding.rule])
    orders = tuple(f.facts["drug"] for f in folded if "drug" in f.facts)
    evidence = tuple(dict.fromkeys((*synthesis.evidence, *orders)))
    missing = list(synthesis.facts.get("missing", ()))
    return replace(
        synthesis,
        variant=calcinosis_synthesis.variant(features, missing) or synthesis.variant,
        facts={**synthesis.facts, "features": features},
        evidence=evidence,
    )
