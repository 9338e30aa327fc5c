"""Shared predicates: the small questions several rules ask of a chart, answered once.

Each reads as a sentence in a rule (``recent_lab(record, "pth", 365)``, ``says(text, words)``)
and keeps the exact comparison the rules used before they shared it: "recent" is at most
`max_days` whole days between the result's time and now; "says" matches whole words only.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from cds_service.fhir.record import CodedResult, ConditionFact, LabResult, MedicationFact
from cds_service.knowledge.chart import Chart
from cds_service.knowledge.loader import thresholds
from cds_service.knowledge.safety import RENAL_CONDITIONS, RENAL_LABS, RENAL_PROCEDURES
from cds_service.rules.base import Reads
from cds_service.terminology import normalise_text

# Words of a qualitative result, French (without accents) and English.
POSITIVE_WORDS = ("positive", "positif", "detected", "detecte", "present")
NEGATIVE_WORDS = ("negative", "negatif", "not detected", "non detecte", "absent", "undetected")


def is_recent(when: datetime, now: datetime, max_days: float) -> bool:
    """Taken at most `max_days` (whole days) before `now`."""
    return (now - when).days <= max_days


def recent_lab(record: Chart, concept: str, max_days: float) -> LabResult | None:
    """The latest result of a laboratory concept, when it is recent; else None."""
    lab = record.labs.get(concept)
    return lab if lab is not None and is_recent(lab.when, record.now, max_days) else None


def below(lab: LabResult, value: float) -> bool:
    """The result is strictly below a value (in the concept's canonical unit)."""
    return lab.value < value


def at_least(lab: LabResult, value: float) -> bool:
    """The result is at or above a value (in the concept's canonical unit)."""
    return lab.value >= value


def says(text: str, words: Iterable[str]) -> bool:
    """The text contains one of the words (or phrases) as whole words."""
    padded = f" {text} "
    return any(f" {word} " in padded for word in words)


def is_digital(ulcer: ConditionFact) -> bool:
    """A skin ulcer of a finger (issue 14): its bodySite is coded as a finger structure, or its
    bodySite, code display, code.text or notes name a finger (knowledge/thresholds.yaml,
    `digital_ulcer`). A skin ulcer recorded elsewhere, or with no site, is not a digital ulcer."""
    if "finger-structure" in ulcer.body_sites:
        return True
    words = thresholds()["digital_ulcer"]["finger_words"]
    texts = (ulcer.body_site_text, normalise_text(ulcer.display), ulcer.text)
    return any(says(text, words) for text in texts if text)


def digital_ulcers(record: Chart) -> list[ConditionFact]:
    """The active conditions of the digital-ulcer value set that are ulcers of a finger."""
    return [c for c in record.conditions_in("digital-ulcer") if is_digital(c)]


def is_positive(result: CodedResult) -> bool:
    """A qualitative result the lab called positive (flag, words or a value above range)."""
    if result.flagged_positive:  # value set positive-interpretation
        return True
    if says(result.text, NEGATIVE_WORDS):
        return False
    if says(result.text, POSITIVE_WORDS):
        return True
    return result.quantity is not None and result.high is not None and result.quantity > result.high


def conditions_of(record: Chart, valuesets: Iterable[str]) -> list[ConditionFact]:
    """The active conditions of these value sets, value set by value set (a condition in two
    of them is listed twice)."""
    return [c for vs in valuesets for c in record.conditions_in(vs)]


def all_orders(record: Chart) -> list[MedicationFact]:
    """Every order of the chart: the active and on-hold ones, then the drafts under review."""
    return [*record.medications, *(record.drafts or ())]


# What the renal status (knowledge/renal.py) is derived from: a rule that reads it reads these.
RENAL_READS = Reads(
    observations=RENAL_LABS,
    conditions=RENAL_CONDITIONS,
    procedures=RENAL_PROCEDURES,
    patient=True,  # sex and age for CKD-EPI 2021
)
