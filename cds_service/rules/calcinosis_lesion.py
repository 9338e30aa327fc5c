"""Calcinosis management pathway, from what is recorded about the lesions.

Sources: seed 000 (Smith, AAD 2019): lesions under 2 mm -> topical sodium thiosulfate; over
5 mm -> intralesional sodium thiosulfate; tumoral calcinosis -> surgery, alone or followed by IV
sodium thiosulfate case by case. Seed 001 (Scleroderma Manitoba 2024): colchicine or minocycline
for inflammatory lesions; stop smoking, avoid cold, manage Raynaud and ulcers; surgery for
lesions that impair hand or joint function or compress a nerve; shock-wave therapy (3-5
sessions every 7-10 days). Seed 002 (SSc calcinosis review): antibiotics covering
Staphylococcus aureus for infected lesions (cephalexin, dicloxacillin, clindamycin);
hydrocolloid dressings for ulcerated lesions; doses of colchicine (1 mg/day) and minocycline
(50-100 mg/day, cyclic). Seed 004: warning signs of infection (purulent discharge, spreading
redness, fever). Evidence level: case reports, case series and small open studies.

What is read (docs/knowledge.md, "Lesions"):
- size: the latest Observation coded LOINC 39126-8 (length) or 39125-0 (width) of a wound, in
  mm or cm, whose `focus` references the calcinosis Condition;
- tumoral, inflammatory, infected, ulcerated, disabling: words in the calcinosis Condition's
  code.text or notes (French or English), or an active skin infection condition; for
  "ulcerated", an active digital ulcer (a skin ulcer of a finger: predicates.is_digital) or a
  skin ulcer whose text names the calcinosis (the lesion itself) - any other skin ulcer is not
  read (issue 14);
- smoking: a current-smoker status (LOINC 72166-2) within 12 months, or tobacco use coded;
- Raynaud phenomenon on the problem list.

A fact producer for the `calcinosis-synthesis` card (rules/calcinosis_synthesis.py): one step
per feature found, with suggestions for those features only. Its former card,
`calcinosis-lesion`, was merged into that card (issue 12).
"""

from __future__ import annotations

from typing import Any

from cds_service.knowledge.chart import Chart
from cds_service.knowledge.loader import thresholds
from cds_service.rules.base import Reads
from cds_service.rules.predicates import is_digital, is_recent, says

ORDER = ("small", "large", "tumoral", "inflammatory", "infected", "ulcerated", "disabling")
# Thresholds and words: knowledge/thresholds.yaml, `calcinosis_lesion`.
READS = Reads(
    observations=("lesion-size", "smoking-status"),
    conditions=("calcinosis", "skin-infection", "digital-ulcer", "tobacco-use", "raynaud"),
)


def lesion_features(record: Chart) -> tuple[list[str], list[Any]]:
    """The recorded features of the calcinosis lesions, and the facts they come from."""
    limits = thresholds()["calcinosis_lesion"]
    calcinosis = record.conditions_in("calcinosis")
    features: list[str] = []
    evidence: list[Any] = []
    refs = {c.ref for c in calcinosis}
    size = record.labs.get("lesion-size")
    if size is not None and refs & set(size.focus):
        if size.value < limits["small_below_mm"]:
            features.append("small")
        elif size.value > limits["large_above_mm"]:
            features.append("large")
        evidence.append(size)
    for feature, words in limits["words"].items():
        if any(says(c.text, words) for c in calcinosis):
            features.append(feature)
    infections = record.conditions_in("skin-infection")
    if infections:
        features.append("infected")
        evidence += infections
    # A digital ulcer (a skin ulcer of a finger), or a skin ulcer recorded as the calcinosis
    # lesion itself (its text names the calcinosis); any other skin ulcer is not read (issue 14).
    ulcers = [
        u
        for u in record.conditions_in("digital-ulcer")
        if is_digital(u) or says(u.text, limits["calcinosis_words"])
    ]
    if ulcers:
        features.append("ulcerated")
        evidence += ulcers
    smoking = record.results.get("smoking-status")
    if (
        smoking is not None
        and "current-smoker" in smoking.value_sets
        and is_recent(smoking.when, record.now, limits["smoking_max_age_days"])
    ):
        features.append("smoking")
        evidence.append(smoking)
    tobacco = record.conditions_in("tobacco-use")
    if tobacco:
        features.append("smoking")
        evidence += tobacco
    raynaud = record.conditions_in("raynaud")
    if raynaud:
        features.append("raynaud")
        evidence += raynaud
    ordered = [f for f in (*ORDER, "smoking", "raynaud") if f in features]
    return ordered, evidence
