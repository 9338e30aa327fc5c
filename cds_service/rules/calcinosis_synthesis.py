"""Calcinosis synthesis: the one patient-view info card about a documented calcinosis.

Sources: those of its fact producers - calcinosis_context.py (seed 001, seed 003, seed 004: the
disease behind the calcinosis), calcinosis_lesion.py (seed 000, seed 001, seed 002, seed 004:
one management step per lesion feature) and calcinosis_workup.py (seed 003, seed 004: the tests
that tell dystrophic from metastatic calcinosis). Evidence level: case reports, case series
and small open studies for the lesion steps; educational sources for the work-up. No randomised
trial of any medical treatment (seeds 001, 002).

When: an active, not refuted calcinosis AND something to act on: at least one recorded lesion
feature (size, tumoral, inflammatory, infected, ulcerated, disabling, current smoking, Raynaud
phenomenon), or at least one work-up test without a recent result.
Then: one `info` card: a line of context for the disease (SSc, dermatomyositis, lupus, or none
recorded), the missing work-up with one order suggestion per test, and the lesion steps with
their suggestions (variant `steps-workup`, `steps` or `workup`). Calcinosis with a complete
work-up and no lesion feature gives no card: the management text is background reading behind
the card's links, not a card at every chart opening (docs/knowledge.md, "Card set").
"""

from __future__ import annotations

from cds_service.knowledge.chart import Chart
from cds_service.rules import calcinosis_context, calcinosis_lesion, calcinosis_workup
from cds_service.rules.base import Finding, Reads

RULE_ID = "calcinosis-synthesis"
NO_DISEASE = "none"  # calcinosis without SSc, dermatomyositis or lupus on the problem list
READS = (
    Reads(conditions=("calcinosis",))
    | calcinosis_context.READS
    | calcinosis_lesion.READS
    | calcinosis_workup.READS
)


def variant(features: list[str], missing: list[str]) -> str | None:
    """The card variant for what there is to act on (None: nothing)."""
    if features and missing:
        return "steps-workup"
    if features:
        return "steps"
    if missing:
        return "workup"
    return None


def evaluate(record: Chart) -> list[Finding]:
    calcinosis = record.conditions_in("calcinosis")
    if not calcinosis:
        return []
    features, lesion_evidence = calcinosis_lesion.lesion_features(record)
    missing = calcinosis_workup.missing_tests(record)
    chosen = variant(features, missing)
    if chosen is None:
        return []
    disease, disease_evidence = calcinosis_context.disease(record)
    notes = calcinosis_workup.unit_notes(record) if missing else []
    evidence = (*disease_evidence, *calcinosis, *lesion_evidence, *notes)
    return [
        Finding(
            RULE_ID,
            chosen,
            facts={"context": disease or NO_DISEASE, "features": features, "missing": missing},
            evidence=tuple(dict.fromkeys(evidence)),
        )
    ]
