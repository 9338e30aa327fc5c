"""The facts a patient record holds: typed, normalised, read from FHIR R4 by
`cds_service.fhir.record.build_record`, and read by the knowledge layer and the rules.

Nothing here reads JSON. A fact keeps the reference of the resource it came from (`ref`), so
that cards can cite their evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from cds_service.terminology import Match


@dataclass(frozen=True)
class Located:
    """A raw resource and the JSON path it came from (for error messages)."""

    path: str
    resource: Mapping[str, Any]


@dataclass(frozen=True)
class PatientInfo:
    id: str
    birth_date: date | None = None  # a full birth date only
    sex: str | None = None  # FHIR administrative gender
    # A birthDate with year only or year-month: the earliest and latest possible birth dates.
    birth_range: tuple[date, date] | None = None
    deceased: bool = False  # deceasedBoolean true or a deceasedDateTime: no cards at all

    def age_on(self, day: date) -> int | None:
        """The age on `day` when the birth date is known to the day, else None."""
        if self.birth_date is None:
            return None
        return _age(self.birth_date, day)

    def age_range_on(self, day: date) -> tuple[int, int] | None:
        """(youngest, oldest) possible age on `day`: equal for a full birth date, a range for
        a year-only or year-month birthDate; None when nothing is known."""
        if self.birth_date is not None:
            age = _age(self.birth_date, day)
            return age, age
        if self.birth_range is None:
            return None
        earliest, latest = self.birth_range
        return _age(latest, day), _age(earliest, day)


def _age(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass(frozen=True)
class ConditionFact:
    ref: str
    valuesets: frozenset[str]
    match: Match
    display: str
    clinical_status: str
    verification_status: str | None
    since: date | None
    text: str = ""  # normalised code.text and notes (what the clinician wrote about it)
    # The latest of onset and recordedDate: when the condition was last asserted (a coded CKD
    # stage is weighed against a laboratory result by this date).
    asserted: date | None = None
    # Condition.bodySite: the body-site value sets its codes belong to (BODY_SITE_VALUESETS in
    # fhir/record.py) and its normalised text and code displays (issue 14: a digital ulcer is
    # a skin ulcer of a finger).
    body_sites: frozenset[str] = frozenset()
    body_site_text: str = ""


@dataclass(frozen=True)
class ProcedureFact:
    """A procedure the renal status reads (a dialysis session, a kidney transplantation)."""

    ref: str
    valuesets: frozenset[str]
    match: Match
    display: str
    status: str
    performed: date


# Interpretation codes that put a result above / below the laboratory's range.
HIGH_FLAGS = frozenset({"H", "HH", "HU"})
LOW_FLAGS = frozenset({"L", "LL", "LU"})


@dataclass(frozen=True)
class LabResult:
    concept: str  # value set id: "egfr", "creatinine", "calcium"...
    value: float  # in the canonical unit of the concept
    unit: str  # canonical unit label
    measured_value: float
    measured_unit: str
    when: datetime
    ref: str
    code: str | None  # the LOINC code it was recognised by
    high: float | None = None  # upper reference limit, canonical unit, when the lab sent one
    flags: frozenset[str] = frozenset()  # interpretation codes (H, HH, POS...)
    focus: tuple[str, ...] = ()  # references in Observation.focus (e.g. the lesion's Condition)
    # Quantity.comparator ("<", "<=", ">", ">="), or the one a valueString carried ("<15"):
    # the true value is beyond `value` in that direction. Never dropped: cards show it.
    comparator: str | None = None
    low: float | None = None  # lower reference limit, canonical unit, when the lab sent one

    @property
    def above_range(self) -> bool:
        """Flagged high by the lab, or above the upper limit it sent ("<X" is above only when
        the lab says so; ">X" is above when X is at or above the limit)."""
        if self.flags & HIGH_FLAGS:
            return True
        if self.high is None or self.comparator in ("<", "<="):
            return False
        if self.comparator in (">", ">="):
            return self.value >= self.high
        return self.value > self.high

    @property
    def below_range(self) -> bool:
        """Flagged low by the lab, or below the lower limit it sent (">X" is below only when
        the lab says so; "<X" is below when X is at or below the limit)."""
        if self.flags & LOW_FLAGS:
            return True
        if self.low is None or self.comparator in (">", ">="):
            return False
        if self.comparator in ("<", "<="):
            return self.value <= self.low
        return self.value < self.low


@dataclass(frozen=True)
class CodedResult:
    """A qualitative observation (antibody, smoking status): what the lab or clinician said."""

    concept: str
    when: datetime
    ref: str
    code: str | None
    values: tuple[tuple[str, str], ...]  # (system, code) of valueCodeableConcept
    text: str  # normalised text of the value (valueString / valueCodeableConcept)
    flags: frozenset[str]
    quantity: float | None = None
    high: float | None = None
    flagged_positive: bool = False  # an interpretation code in the positive-interpretation set
    value_sets: frozenset[str] = frozenset()  # value sets the coded value belongs to


@dataclass(frozen=True)
class MedicationFact:
    ref: str
    id: str | None
    valuesets: frozenset[str]
    match: Match
    display: str
    status: str
    authored: date | None
    resource: Mapping[str, Any] = field(repr=False, compare=False)
    draft: bool = False  # a draft order under review (order-select / order-sign)


@dataclass(frozen=True)
class DataNote:
    """Data that was present but could not be interpreted (shown on cards, never guessed)."""

    kind: str  # one of NOTE_KINDS
    concept: str  # the value set it concerns ("" when none is known)
    ref: str
    detail: str  # the unit not recognised, the field that could not be read, the prefetch key
    when: datetime | None = None
    resource_type: str = ""
    reason: str = ""  # why a search is incomplete ("no fhirServer", "HTTP 500"...)


# unit-not-recognised: a lab value in a unit that is not converted (not guessed);
# unreadable: a resource the rules would read is not valid R4 even after coercion (left out);
# unidentified-order: an order whose medication cannot be resolved nor named;
# incomplete: a prefetched search had more pages that could not be fetched.
NOTE_KINDS = ("unit-not-recognised", "unreadable", "unidentified-order", "incomplete")
NOT_ALLOWED = "not-allowed"  # DataNote.reason: fhirServer is not one this service may query


@dataclass(frozen=True)
class PatientRecord:
    patient: PatientInfo
    now: datetime
    conditions: tuple[ConditionFact, ...]
    labs: Mapping[str, LabResult]
    medications: tuple[MedicationFact, ...]
    notes: tuple[DataNote, ...]
    # Draft orders under review (order-select / order-sign); None at patient-view.
    drafts: tuple[MedicationFact, ...] | None = None
    results: Mapping[str, CodedResult] = field(default_factory=dict)  # latest per concept
    procedures: tuple[ProcedureFact, ...] = ()  # dialysis sessions, kidney transplantations

    def conditions_in(self, valueset: str) -> list[ConditionFact]:
        return [c for c in self.conditions if valueset in c.valuesets]

    def has_condition(self, valueset: str) -> bool:
        return any(valueset in c.valuesets for c in self.conditions)

    def orders_in(self, valueset: str) -> list[MedicationFact]:
        """The orders a treatment-safety rule checks: the draft orders under review at
        order-select / order-sign, the active orders at patient-view."""
        orders = self.drafts if self.drafts is not None else self.medications
        return [m for m in orders if valueset in m.valuesets]
