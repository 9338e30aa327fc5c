"""Shared predicates: the small questions several rules ask of a chart, answered once.

Each reads as a sentence in a rule (``recent_lab(record, "pth", 365)``, ``says(text, words)``)
and keeps the exact comparison the rules used before they shared it: "recent" is at most
`max_days` whole days between the result's time and now; "says" matches whole words only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

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


# The laboratory's own albumin-corrected total calcium (calcium value set).
CORRECTED_CALCIUM_LOINC = "29265-6"


def same_day(a: LabResult, b: LabResult) -> bool:
    return a.when.date() == b.when.date()


# The interpretation flags a corrected value no longer carries, by the range bound it is
# judged against (the laboratory's flag was about the measured value).
_BOUND_FLAGS = {"high": frozenset({"H", "HH", "HU"}), "low": frozenset({"L", "LL", "LU"})}


def corrected_calcium(
    calcium: LabResult, albumin: LabResult | None, bound: str = "high"
) -> LabResult | None:
    """The total calcium corrected for an albumin of the same day (Payne 1973), as a calcium
    result of that value; None when the laboratory already corrected it, or there is no such
    albumin. Its reference range and flags are the measured calcium's: a corrected calcium is
    read against the total calcium range (calcium value set). ``bound`` is the limit it is to
    be judged against ("high" for `high_calcium`, "low" for `low_calcium`): without that limit
    the laboratory's own flag stays the judge (None), and its flags of that side are dropped."""
    if calcium.code == CORRECTED_CALCIUM_LOINC or albumin is None:
        return None
    limit = calcium.high if bound == "high" else calcium.low
    if limit is None or calcium.comparator is not None:
        return None  # without the laboratory's range the lab's own flag stays the judge
    if not same_day(calcium, albumin) or albumin.comparator is not None:
        return None
    limits = thresholds()["calcinosis_type"]
    albumin_g_dl = albumin.value / 10  # canonical g/L
    value = calcium.value + limits["albumin_slope_mg_dl_per_g_dl"] * (
        limits["albumin_reference_g_dl"] - albumin_g_dl
    )
    # The laboratory's flag was about the measured value: only the range judges the new one.
    return replace(calcium, value=value, flags=calcium.flags - _BOUND_FLAGS[bound])


def _calcium_beyond(record: Chart, max_days: float, bound: str) -> list[LabResult]:
    """The evidence of a recent calcium beyond the laboratory's range on the side of `bound`
    ("high": above, "low": below), or [] (issue 14). A total calcium is judged corrected for an
    albumin of the same day (Payne 1973, as `corrected_calcium` computes it; not one the
    laboratory already corrected, LOINC 29265-6): the evidence is then the measured calcium and
    that albumin. Without such a total calcium, a recent ionised calcium beyond its range."""

    def beyond(lab: LabResult) -> bool:
        return lab.above_range if bound == "high" else lab.below_range

    calcium = recent_lab(record, "calcium", max_days)
    if calcium is not None:
        albumin = recent_lab(record, "albumin", max_days)
        corrected = corrected_calcium(calcium, albumin, bound=bound)
        if corrected is not None and beyond(corrected):
            return [calcium, albumin] if albumin is not None else [calcium]
        if corrected is None and beyond(calcium):
            return [calcium]
    ionised = recent_lab(record, "calcium-ionised", max_days)
    return [ionised] if ionised is not None and beyond(ionised) else []


def high_calcium(record: Chart, max_days: float) -> list[LabResult]:
    """A recent calcium above the laboratory's range (calcium and vitamin D in calcinosis)."""
    return _calcium_beyond(record, max_days, "high")


def low_calcium(record: Chart, max_days: float) -> list[LabResult]:
    """A recent calcium below the laboratory's range, its range low or flagged L / LL
    (hypocalcaemia before a bisphosphonate); a low albumin can bring a low total calcium back
    into range."""
    return _calcium_beyond(record, max_days, "low")


# Parenteral routes (issue 14: ibandronate is a tablet and an injection; an oral-only row must
# not fire on the injection). Route codes as verified in terminology/products/forms.yaml
# (SNOMED CT: intravenous, intramuscular, subcutaneous, intra-arterial; EDQM: the same uses).
PARENTERAL_ROUTE_CODES = frozenset(
    {"47625008", "78421000", "34206005", "58100008", "20045000", "20035000", "20066000", "20023000"}
)
PARENTERAL_WORDS = (
    "intravenous",
    "intravenously",
    "intraveineuse",
    "intraveineux",
    "iv",
    "ivd",
    "intramuscular",
    "intramusculaire",
    "im",
    "subcutaneous",
    "sous cutanee",
    "injection",
    "injections",
    "injectable",
    "inj",
    "perfusion",
    "infusion",
    "prefilled syringe",
    "seringue preremplie",
)


def _concept_texts(concept: Any) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    codings = concept.get("coding")
    texts = [concept.get("text")]
    texts += (
        [c.get("display") for c in codings if isinstance(c, Mapping)]
        if isinstance(codings, list)
        else []
    )
    return [t for t in texts if isinstance(t, str)]


def is_parenteral(order: MedicationFact) -> bool:
    """The order is for a parenteral form: a dosage route coded intravenous, intramuscular,
    subcutaneous or intra-arterial, or a parenteral word ("injection", "IV", "perfusion"...) in
    the product's name, the route text or the dosage text. An order that says nothing is not
    parenteral (an oral-only row keeps it: no missed warning)."""
    resource = order.resource if isinstance(order.resource, Mapping) else {}
    texts = [order.display, *_concept_texts(resource.get("medicationCodeableConcept"))]
    dosages = resource.get("dosageInstruction")
    for dosage in dosages if isinstance(dosages, list) else []:
        if not isinstance(dosage, Mapping):
            continue
        route = dosage.get("route")
        codings = route.get("coding") if isinstance(route, Mapping) else None
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, Mapping) and coding.get("code") in PARENTERAL_ROUTE_CODES:
                return True
        texts += _concept_texts(route)
        texts += [
            dosage[k] for k in ("text", "patientInstruction") if isinstance(dosage.get(k), str)
        ]
    return any(says(normalise_text(text), PARENTERAL_WORDS) for text in texts)
