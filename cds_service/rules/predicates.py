"""Shared predicates: the small questions several rules ask of a chart, answered once.

Each reads as a sentence in a rule (``recent_lab(record, "pth", 365)``, ``says(text, words)``)
and keeps the exact comparison the rules used before they shared it: "recent" is at most
`max_days` whole days between the result's time and now; "says" matches whole words only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cds_service.fhir.facts import HIGH_FLAGS, LOW_FLAGS
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
_BOUND_FLAGS = {"high": HIGH_FLAGS, "low": LOW_FLAGS}


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


# --------------------------------------------------------------------------- daily dose
# Issue 14 (glucocorticoids in SSc): the daily dose of an order, read from its
# MedicationRequest.dosageInstruction, in mg, then in prednisone equivalents
# (knowledge/thresholds.yaml `glucocorticoid_renal_crisis`).

# Mass units, as UCUM codes or as written, in mg.
_MG_PER_UNIT: Mapping[str, float] = {
    "mg": 1.0,
    "milligram": 1.0,
    "milligrams": 1.0,
    "milligramme": 1.0,
    "milligrammes": 1.0,
    "g": 1000.0,
    "gram": 1000.0,
    "grams": 1000.0,
    "gramme": 1000.0,
    "grammes": 1000.0,
    "ug": 0.001,
    "mcg": 0.001,
    "microgram": 0.001,
    "micrograms": 0.001,
    "microgramme": 0.001,
    "microgrammes": 0.001,
}
# Timing.repeat.periodUnit (UCUM) in days.
_PERIOD_DAYS: Mapping[str, float] = {
    "min": 1 / 1440,
    "h": 1 / 24,
    "d": 1.0,
    "wk": 7.0,
    "mo": 30.0,
    "a": 365.0,
}
# Timing.code (HL7 v3 GTSAbbreviation) -> administrations per day.
_TIMING_CODES: Mapping[str, float] = {
    "QD": 1,
    "AM": 1,
    "PM": 1,
    "BID": 2,
    "TID": 3,
    "QID": 4,
    "QOD": 0.5,
}
# Frequencies written in a dosage text (normalised: lower case, no accents), per day.
_TEXT_FREQUENCIES: tuple[tuple[str, float], ...] = (
    (r"\b(?:four times|4 times|4 fois|quatre fois|qid|q i d)\b", 4),
    (r"\b(?:three times|3 times|3 fois|trois fois|tid|t i d)\b", 3),
    (r"\b(?:twice|2 times|2 fois|deux fois|bid|b i d|matin et soir)\b", 2),
    (r"\b(?:every other day|every 2 days|un jour sur deux|tous les 2 jours|qod)\b", 0.5),
    (r"\b(?:weekly|once a week|per week|a week|par semaine|1 fois par semaine)\b", 1 / 7),
    (
        r"\b(?:once a day|once daily|daily|per day|a day|every day|each day|every morning|"
        r"each morning|in the morning|qd|od|once|par jour|chaque jour|tous les jours|"
        r"le matin|chaque matin|tous les matins|1 fois par jour|une fois par jour|"
        r"jour|day|d|j)\b",
        1,
    ),
)
_TEXT_DOSE = re.compile(
    r"\b(\d+(?:p\d+)?)\s*(mg|g|mcg|ug|milligrams?|milligrammes?|grams?|grammes?|"
    r"micrograms?|microgrammes?)\b"
)
_TEXT_DURATION = re.compile(
    r"\b(?:for|during|pendant|durant)\s+\d+\s*(?:days?|weeks?|months?|jours?|semaines?|mois)\b"
)
_TEXT_EVERY_HOURS = re.compile(r"\b(?:every|toutes les|q)\s*(\d+)\s*(?:h|hours?|heures?)\b")


@dataclass(frozen=True)
class DailyDose:
    """A daily dose in mg. ``lower_bound``: the frequency was not stated, one administration a
    day is assumed, so the true daily dose may be higher (never read as "below a limit")."""

    mg: float
    lower_bound: bool = False


def _mass_mg(quantity: Any) -> float | None:
    if not isinstance(quantity, Mapping):
        return None
    value = quantity.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        return None
    for key in ("code", "unit"):
        unit = quantity.get(key)
        if isinstance(unit, str) and unit.strip().lower() in _MG_PER_UNIT:
            return float(value) * _MG_PER_UNIT[unit.strip().lower()]
    return None  # a tablet, a mL, or no unit: not a mass


def _coded_dose_mg(dosage: Mapping[str, Any]) -> float | None:
    """The dose of one administration: doseQuantity, or the high end of doseRange."""
    rates = dosage.get("doseAndRate")
    for rate in rates if isinstance(rates, list) else []:
        if not isinstance(rate, Mapping):
            continue
        if "doseQuantity" in rate:
            return _mass_mg(rate["doseQuantity"])
        dose_range = rate.get("doseRange")
        if isinstance(dose_range, Mapping):
            return _mass_mg(dose_range.get("high"))
    return None


def _per_day(timing: Any) -> float | None:
    """Administrations per day from a Timing: repeat.frequency (its frequencyMax when higher)
    per period (periodUnit), or a known Timing.code; None when it does not say."""
    if not isinstance(timing, Mapping):
        return None
    repeat = timing.get("repeat")
    if isinstance(repeat, Mapping) and "period" in repeat:
        frequency = repeat.get("frequencyMax", repeat.get("frequency", 1))
        period, unit = repeat.get("period"), repeat.get("periodUnit")
        numbers = (frequency, period)
        if (
            all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)
            and period > 0
            and unit in _PERIOD_DAYS
        ):
            return float(frequency) / (float(period) * _PERIOD_DAYS[unit])
        return None
    code = timing.get("code")
    codings = code.get("coding") if isinstance(code, Mapping) else None
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, Mapping) and coding.get("code") in _TIMING_CODES:
            return float(_TIMING_CODES[coding["code"]])
    return None


def _text_dose(text: str) -> DailyDose | None:
    """A dosage text with one dose in a mass unit ("20 mg", "10 mg twice a day", "1 g IV
    daily", "5 mg every 12 hours"); None for several doses ("10 mg morning, 5 mg evening"), a
    dose in tablets, no dose, or any other number the reading does not explain ("10 mg 2/j",
    "10 mg x3"). A text that names no frequency is a lower bound (once a day assumed)."""
    # Decimal marks survive normalisation as "p" ("2.5 mg", "2,5 mg" -> "2p5 mg").
    norm = normalise_text(re.sub(r"(\d)[.,](\d)", r"\1p\2", text))
    doses = list(_TEXT_DOSE.finditer(norm))
    if len(doses) != 1:
        return None
    value, unit = doses[0].groups()
    mg = float(value.replace("p", ".")) * _MG_PER_UNIT[unit]
    rest = norm[: doses[0].start()] + " " + norm[doses[0].end() :]
    read: DailyDose | None = None
    hours = _TEXT_EVERY_HOURS.search(rest)
    if hours and int(hours.group(1)) > 0:
        read, rest = DailyDose(mg * 24 / int(hours.group(1))), rest.replace(hours.group(0), " ")
    else:
        for pattern, per_day in _TEXT_FREQUENCIES:
            found = re.search(pattern, rest)
            if found:
                read, rest = DailyDose(mg * per_day), rest.replace(found.group(0), " ")
                break
    rest = _TEXT_DURATION.sub(" ", rest)  # "for 5 days" is how long, not how much
    if re.search(r"\d", rest):
        return None  # a number the reading does not explain (a count, a frequency)
    return read if read is not None else DailyDose(mg, lower_bound=True)


def _dosage_daily_mg(dosage: Mapping[str, Any]) -> DailyDose | None:
    dose = _coded_dose_mg(dosage)
    if dose is not None:
        per_day = _per_day(dosage.get("timing"))
        return DailyDose(dose * per_day) if per_day is not None else DailyDose(dose, True)
    if "doseAndRate" in dosage:
        return None  # a coded dose that is not a mass: the text may not contradict it
    text = dosage.get("text")
    return _text_dose(text) if isinstance(text, str) else None


def daily_dose_mg(order: MedicationFact) -> DailyDose | None:
    """The order's daily dose in mg, or None when it cannot be read (no dosage, a dose not in
    a mass unit, an unreadable text). Dosage instructions of one ``sequence`` (or all of them
    when none says) are taken together and summed; of several sequences (a taper), the highest
    daily dose counts. One unreadable instruction makes the whole dose unreadable."""
    resource = order.resource if isinstance(order.resource, Mapping) else {}
    dosages = resource.get("dosageInstruction")
    if not isinstance(dosages, list) or not dosages:
        return None
    by_sequence: dict[Any, list[DailyDose]] = {}
    for dosage in dosages:
        if not isinstance(dosage, Mapping):
            return None
        read = _dosage_daily_mg(dosage)
        if read is None:
            return None
        by_sequence.setdefault(dosage.get("sequence"), []).append(read)
    totals = [
        DailyDose(sum(d.mg for d in reads), any(d.lower_bound for d in reads))
        for reads in by_sequence.values()
    ]
    return max(totals, key=lambda d: d.mg)


def prednisone_equivalent(order: MedicationFact) -> DailyDose | None:
    """The order's daily dose in prednisone-equivalent mg (thresholds.yaml
    `glucocorticoid_renal_crisis.equivalent_dose_mg`), or None when its dose cannot be read or
    its drug has no equivalence."""
    equivalents = thresholds()["glucocorticoid_renal_crisis"]["equivalent_dose_mg"]
    drugs = [vs for vs in equivalents if vs in order.valuesets]
    dose = daily_dose_mg(order)
    if dose is None or not drugs:
        return None
    factor = max(equivalents["prednisone"] / equivalents[vs] for vs in drugs)
    return DailyDose(dose.mg * factor, dose.lower_bound)


def daily_dose_at_least(order: MedicationFact, limit: float) -> bool:
    """The daily prednisone-equivalent dose reads `limit` mg or more (a lower bound counts)."""
    dose = prednisone_equivalent(order)
    return dose is not None and dose.mg >= limit


def daily_dose_unread(order: MedicationFact, limit: float) -> bool:
    """The daily dose cannot be shown to be below `limit` mg prednisone-equivalent: it cannot
    be read, or only as a lower bound below the limit (no frequency stated)."""
    dose = prednisone_equivalent(order)
    return dose is None or (dose.lower_bound and dose.mg < limit)
