"""Calcinosis risk screening in systemic sclerosis.

Sources: seed 001 (Scleroderma Manitoba, 2024): calcinosis affects 20-40 % of SSc; risk factors
are male sex, digital ulcers (of the fingers: a skin ulcer elsewhere or without a site does not
count, predicates.is_digital), osteoporosis, internal-organ involvement (especially pulmonary
fibrosis), anti-centromere, anti-PM-Scl and anti-RNA-polymerase-III antibodies and long disease
duration; diagnosis by examination and plain radiographs. Seed 003: 25-40 % of limited
cutaneous SSc develop calcinosis after 10 years. Evidence level: observational cohorts
summarised in a patient article.

When: active SSc, no active documented calcinosis, and at least one risk factor.
Then: an `info` card listing the factors found, suggesting examination and hand radiographs.
"""

from __future__ import annotations

from datetime import timedelta

from cds_service.knowledge.chart import Chart
from cds_service.knowledge.loader import thresholds
from cds_service.rules.base import Finding, Reads
from cds_service.rules.predicates import digital_ulcers, is_positive

RULE_ID = "calcinosis-risk-screening"
RISK_CONDITIONS = ("digital-ulcer", "osteoporosis", "interstitial-lung-disease")
ANTIBODIES = ("anti-centromere", "anti-pm-scl", "anti-rna-polymerase-iii")
READS = Reads(
    observations=ANTIBODIES,
    conditions=("systemic-sclerosis", "calcinosis", *RISK_CONDITIONS),
    patient=True,  # sex
)


def evaluate(record: Chart) -> list[Finding]:
    ssc = record.conditions_in("systemic-sclerosis")
    if not ssc or record.has_condition("calcinosis"):
        return []
    factors: list[tuple[str, dict[str, object]]] = []
    evidence: list[object] = []
    if record.patient.sex == "male":
        factors.append(("male-sex", {}))
    for valueset in RISK_CONDITIONS:
        # Digital ulcers are ulcers of the fingers (issue 14), not any skin ulcer.
        found = (
            digital_ulcers(record)
            if valueset == "digital-ulcer"
            else record.conditions_in(valueset)
        )
        if found:
            factors.append((valueset, {}))
            evidence += found
    for antibody in ANTIBODIES:
        result = record.results.get(antibody)
        if result is not None and is_positive(result):
            factors.append((antibody, {}))
            evidence.append(result)
    onsets = [c.since for c in ssc if c.since is not None]
    limit = thresholds()["calcinosis_risk"]["disease_duration_years"]
    if onsets:
        first = min(onsets)
        years = (record.now.date() - first).days // 365
        if record.now.date() - first > timedelta(days=round(365.25 * limit)):
            factors.append(("disease-duration", {"years": years}))
    if not factors:
        return []
    return [
        Finding(RULE_ID, "risk-factors", facts={"factors": factors}, evidence=(*ssc, *evidence))
    ]
