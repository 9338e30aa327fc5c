"""FHIR R4 resources -> a typed, normalised patient record.

Only what the rules read is parsed. Every resource is first screened on its raw JSON (type,
subject, code membership in a value set, status); the few that matter are then validated with
the ``fhir.resources.R4B`` models, so a malformed resource the rules would rely on is reported
to the caller with its JSON path instead of being silently misread. Full validation of every
resource in a large prefetch would cost tens of milliseconds and is never done.

Rules honoured here (issue 2):
- Conditions count unless clinicalStatus is inactive / remission / resolved or
  verificationStatus is refuted / entered-in-error.
- Observations count unless status is entered-in-error / cancelled; the latest interpretable
  value per concept is kept, in canonical units; a value in a unit that is not recognised is not
  guessed and is reported as a note.
- MedicationRequests count when status is active or on-hold; draft orders (order-select /
  order-sign) count unless cancelled, stopped, completed or entered in error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from cds_service.errors import InputError
from cds_service.fhir import units
from cds_service.knowledge import renal
from cds_service.terminology import Match, Terminology, normalise_text

INACTIVE_CLINICAL = frozenset({"inactive", "remission", "resolved"})
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
EXCLUDED_OBSERVATION = frozenset({"entered-in-error", "cancelled"})
ACTIVE_MEDICATION = frozenset({"active", "on-hold"})
DRAFT_MEDICATION = frozenset({"draft", "active", "on-hold"})

MODELS = {
    "Patient": Patient,
    "Condition": Condition,
    "Observation": Observation,
    "MedicationRequest": MedicationRequest,
}


@dataclass(frozen=True)
class Located:
    """A raw resource and the JSON path it came from (for error messages)."""

    path: str
    resource: Mapping[str, Any]


@dataclass(frozen=True)
class PatientInfo:
    id: str
    birth_date: date | None = None
    sex: str | None = None  # FHIR administrative gender

    def age_on(self, day: date) -> int | None:
        if self.birth_date is None:
            return None
        b = self.birth_date
        return day.year - b.year - ((day.month, day.day) < (b.month, b.day))


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

    @property
    def above_range(self) -> bool:
        """Flagged high by the lab, or above the upper limit it sent."""
        return bool(self.flags & {"H", "HH", "HU"}) or (
            self.high is not None and self.value > self.high
        )


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

    kind: str  # "unit-not-recognised"
    concept: str
    ref: str
    detail: str
    when: datetime | None = None


@dataclass(frozen=True)
class PatientRecord:
    patient: PatientInfo
    now: datetime
    conditions: tuple[ConditionFact, ...]
    labs: Mapping[str, LabResult]
    medications: tuple[MedicationFact, ...]
    notes: tuple[DataNote, ...]
    renal: renal.RenalStatus
    # Draft orders under review (order-select / order-sign); None at patient-view.
    drafts: tuple[MedicationFact, ...] | None = None
    results: Mapping[str, CodedResult] = field(default_factory=dict)  # latest per concept

    def conditions_in(self, valueset: str) -> list[ConditionFact]:
        return [c for c in self.conditions if valueset in c.valuesets]

    def has_condition(self, valueset: str) -> bool:
        return any(valueset in c.valuesets for c in self.conditions)

    def medications_in(self, valueset: str) -> list[MedicationFact]:
        return [m for m in self.medications if valueset in m.valuesets]

    def orders_in(self, valueset: str) -> list[MedicationFact]:
        """The orders a treatment-safety rule checks: the draft orders under review at
        order-select / order-sign, the active orders at patient-view."""
        orders = self.drafts if self.drafts is not None else self.medications
        return [m for m in orders if valueset in m.valuesets]


# Minimal resources touching the nested element types the record reads (no codes: text only).
_CONCEPT = {"coding": [{"display": "warm-up"}], "text": "warm-up"}
_SUBJECT = {"reference": "Patient/warm-up"}
_WARM_UP = (
    {
        "resourceType": "Patient",
        "id": "warm-up",
        "gender": "unknown",
        "birthDate": "1970-01-01",
        "name": [{"family": "warm-up", "given": ["warm-up"]}],
        "identifier": [{"system": "urn:warm-up", "value": "warm-up"}],
    },
    {
        "resourceType": "Condition",
        "subject": _SUBJECT,
        "code": _CONCEPT,
        "category": [_CONCEPT],
        "clinicalStatus": _CONCEPT,
        "verificationStatus": _CONCEPT,
        "onsetDateTime": "2020-01-01",
        "recordedDate": "2020-01-01",
    },
    {
        "resourceType": "Observation",
        "status": "final",
        "subject": _SUBJECT,
        "code": _CONCEPT,
        "category": [_CONCEPT],
        "effectiveDateTime": "2020-01-01T00:00:00+00:00",
        "issued": "2020-01-01T00:00:00+00:00",
        "valueQuantity": {
            "value": 1,
            "unit": "u",
            "system": "http://unitsofmeasure.org",
            "code": "u",
        },
    },
    {
        "resourceType": "Observation",
        "status": "final",
        "code": _CONCEPT,
        "effectivePeriod": {"start": "2020-01-01"},
    },
    {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": _SUBJECT,
        "medicationCodeableConcept": _CONCEPT,
        "authoredOn": "2020-01-01",
        "dosageInstruction": [{"text": "warm-up"}],
        "contained": [{"resourceType": "Medication", "id": "m", "code": _CONCEPT}],
    },
)


def warm_up() -> None:
    """Validate one small resource per model once, at start-up: fhir.resources imports its
    nested element models on first use, which would otherwise cost the first request ~20 ms."""
    for resource in _WARM_UP:
        MODELS[resource["resourceType"]].model_validate(resource)


# --------------------------------------------------------------------------- helpers


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date / dateTime / instant as an aware UTC datetime (partial dates -> their start)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=UTC)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def items(value: Any) -> list[Any]:
    """A FHIR array as sent, or empty when it is not an array (malformed input is then
    reported by R4B validation of the resources the rules read, never a crash)."""
    return value if isinstance(value, list) else []


def _text_or_none(value: Any) -> str | None:
    """A FHIR code as sent, or None when it is not a string (malformed input)."""
    return value if isinstance(value, str) else None


def _status_code(concept: Any) -> str | None:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus)."""
    if not isinstance(concept, Mapping):
        return None
    for coding in items(concept.get("coding")):
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            return coding["code"]
    return None


def _display(concept: Mapping[str, Any] | None, match: Match) -> str:
    if match.display:
        return match.display
    if isinstance(concept, Mapping):
        if isinstance(concept.get("text"), str):
            return concept["text"]
        for coding in items(concept.get("coding")):
            if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
                return coding["display"]
    return match.label


def _ref(resource: Mapping[str, Any]) -> str:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid}" if isinstance(rid, str) else "(no id)"


def _validate(item: Located) -> None:
    """Validate one raw resource with its R4B model; raise InputError naming the field."""
    model = MODELS[item.resource["resourceType"]]
    try:
        model.model_validate(item.resource)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        raise InputError(
            f"invalid FHIR R4 {item.resource['resourceType']}: {err['msg']}",
            path=f"{item.path}{loc}",
        ) from None


def _check_subject(item: Located, patient: str) -> None:
    """`patient` is the reference every subject / patient must end with: Patient/<id>."""
    for key in ("subject", "patient"):
        ref = item.resource.get(key)
        if ref is None:
            continue
        reference = ref.get("reference") if isinstance(ref, Mapping) else None
        if isinstance(reference, str) and not reference.endswith(patient):
            raise InputError(
                "resource belongs to another patient than context.patientId",
                path=f"{item.path}.{key}.reference",
            )


# --------------------------------------------------------------------------- builder


def build_record(
    resources: Iterable[Located],
    patient_id: str,
    terminology: Terminology,
    now: datetime,
    drafts: Iterable[Located] | None = None,
) -> PatientRecord:
    """Screen, validate and normalise the resources of one patient, and the draft orders under
    review when there are (order hooks)."""
    patient = PatientInfo(id=patient_id)
    conditions: list[ConditionFact] = []
    observations: dict[str, list[tuple[datetime, Located, Match]]] = {}
    medications: list[MedicationFact] = []
    notes: list[DataNote] = []
    medication_index: dict[str, Mapping[str, Any]] = {}
    med_requests: list[Located] = []
    subject = f"Patient/{patient_id}"
    codes: dict[tuple[Any, ...], list[Match]] = {}  # Observation.code lookups

    for item in resources:
        res = item.resource
        kind = res.get("resourceType")
        if kind == "Patient":
            patient = _patient(item, patient_id)
        elif kind == "Medication" and isinstance(res.get("id"), str):
            medication_index[f"Medication/{res['id']}"] = res
        elif kind == "Condition":
            _check_subject(item, subject)
            fact = _condition(item, terminology)
            if fact is not None:
                conditions.append(fact)
        elif kind == "Observation":
            _check_subject(item, subject)
            _screen_observation(item, terminology, observations, codes)
        elif kind == "MedicationRequest":
            _check_subject(item, subject)
            med_requests.append(item)

    for item in med_requests:
        fact = _medication(item, terminology, medication_index, draft=False)
        if fact is not None:
            medications.append(fact)
    draft_facts: list[MedicationFact] | None = None
    if drafts is not None:
        draft_facts = []
        for item in drafts:
            if item.resource.get("resourceType") != "MedicationRequest":
                continue  # other draft orders (ServiceRequest...) are not checked yet
            _check_subject(item, subject)
            fact = _medication(item, terminology, medication_index, draft=True)
            if fact is not None:
                draft_facts.append(fact)

    labs: dict[str, LabResult] = {}
    results: dict[str, CodedResult] = {}
    for concept, candidates in observations.items():
        # Newest first; on equal times the first in the prefetch wins (sorted() is stable).
        for when, item, match in sorted(candidates, key=lambda c: c[0], reverse=True):
            if units.is_quantitative(concept):
                result = _lab_result(concept, when, item, match, notes)
                if result is not None:
                    labs[concept] = result
                    break
            else:
                coded = _coded_result(concept, when, item, match, terminology)
                if coded is not None:
                    results[concept] = coded
                    break

    status = renal.assess(patient, labs.get("egfr"), labs.get("creatinine"), conditions, now)
    return PatientRecord(
        patient=patient,
        now=now,
        conditions=tuple(conditions),
        labs=labs,
        medications=tuple(medications),
        notes=tuple(notes),
        renal=status,
        drafts=tuple(draft_facts) if draft_facts is not None else None,
        results=results,
    )


def _patient(item: Located, patient_id: str) -> PatientInfo:
    res = item.resource
    if isinstance(res.get("id"), str) and res["id"] != patient_id:
        raise InputError("Patient.id does not match context.patientId", path=f"{item.path}.id")
    _validate(item)
    birth = parse_datetime(res.get("birthDate"))
    gender = res.get("gender")
    return PatientInfo(
        id=patient_id,
        birth_date=birth.date() if birth and len(res["birthDate"]) >= 10 else None,
        sex=gender if isinstance(gender, str) else None,
    )


def _condition(item: Located, terminology: Terminology) -> ConditionFact | None:
    res = item.resource
    matches = terminology.match(res.get("code"), "Condition")
    if not matches:
        return None
    clinical = _status_code(res.get("clinicalStatus")) or "active"
    verification = _status_code(res.get("verificationStatus"))
    if clinical in INACTIVE_CLINICAL or verification in EXCLUDED_VERIFICATION:
        return None
    _validate(item)
    since = parse_datetime(res.get("onsetDateTime")) or parse_datetime(res.get("recordedDate"))
    code = res.get("code")
    written = [code.get("text")] if isinstance(code, Mapping) else []
    written += [n.get("text") for n in items(res.get("note")) if isinstance(n, Mapping)]
    return ConditionFact(
        ref=_ref(res),
        valuesets=frozenset(m.valueset for m in matches),
        match=matches[0],
        display=_display(res.get("code"), matches[0]),
        clinical_status=clinical,
        verification_status=verification,
        since=since.date() if since else None,
        text=normalise_text(" ".join(t for t in written if isinstance(t, str))),
    )


def _observation_time(res: Mapping[str, Any]) -> datetime | None:
    period = res.get("effectivePeriod")
    return (
        parse_datetime(res.get("effectiveDateTime"))
        or parse_datetime(res.get("effectiveInstant"))
        or (parse_datetime(period.get("start")) if isinstance(period, Mapping) else None)
        or parse_datetime(res.get("issued"))
    )


def _observation_matches(
    concept: Any, terminology: Terminology, seen: dict[tuple[Any, ...], list[Match]]
) -> list[Match]:
    """The value sets an Observation.code belongs to by code (an observation is never
    recognised by its text). A long record repeats a few codes hundreds of times: the answer
    for each distinct list of codings is kept for the request (a by-code match depends only on
    each coding's system, code and display, which make the key)."""
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    if not isinstance(codings, list):
        return []
    try:
        key: tuple[Any, ...] | None = tuple(
            (c.get("system"), c.get("code"), c.get("display")) if isinstance(c, Mapping) else None
            for c in codings
        )
        found = seen.get(key)
    except TypeError:  # an unhashable value (malformed coding): no memo for this one
        key, found = None, None
    if found is None:
        found = [m for m in terminology.match(concept, "Observation") if m.by == "code"]
        if key is not None:
            seen[key] = found
    return found


def _screen_observation(
    item: Located,
    terminology: Terminology,
    observations: dict[str, list[tuple[datetime, Located, Match]]],
    seen: dict[tuple[Any, ...], list[Match]],
) -> None:
    """Keep every counting observation of a concept the rules read, with its time."""
    res = item.resource
    if _text_or_none(res.get("status")) in EXCLUDED_OBSERVATION:
        return
    matches = _observation_matches(res.get("code"), terminology, seen)
    if not matches:
        return
    when = _observation_time(res)
    if when is None:
        _validate(item)  # a malformed date is reported; a missing one cannot be ordered
        return
    for match in matches:
        observations.setdefault(match.valueset, []).append((when, item, match))


def _lab_result(
    concept: str, when: datetime, item: Located, match: Match, notes: list[DataNote]
) -> LabResult | None:
    res = item.resource
    quantity = res.get("valueQuantity")
    if not isinstance(quantity, Mapping) or quantity.get("value") is None:
        return None
    _validate(item)
    value = float(quantity["value"])
    spellings = [u for u in (quantity.get("code"), quantity.get("unit")) if isinstance(u, str)]
    canonical = units.to_canonical(concept, value, spellings)
    if canonical is None:
        notes.append(
            DataNote(
                kind="unit-not-recognised",
                concept=concept,
                ref=_ref(res),
                detail=spellings[0] if spellings else "(no unit)",
                when=when,
            )
        )
        return None
    return LabResult(
        concept=concept,
        value=canonical,
        unit=units.canonical_label(concept),
        measured_value=value,
        measured_unit=spellings[-1] if spellings else "",
        when=when,
        ref=_ref(res),
        code=match.code,
        high=_upper_limit(concept, res, spellings),
        flags=_interpretation(res),
        focus=tuple(
            f["reference"]
            for f in items(res.get("focus"))
            if isinstance(f, Mapping) and isinstance(f.get("reference"), str)
        ),
    )


def _interpretation(res: Mapping[str, Any]) -> frozenset[str]:
    codes = set()
    for concept in items(res.get("interpretation")):
        for coding in (items(concept.get("coding"))) if isinstance(concept, Mapping) else ():
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                codes.add(coding["code"])
    return frozenset(codes)


def _range_high(res: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The `high` Quantity of the first reference range, when the lab sent one."""
    ranges = res.get("referenceRange")
    if not isinstance(ranges, list) or not ranges or not isinstance(ranges[0], Mapping):
        return None
    high = ranges[0].get("high")
    return high if isinstance(high, Mapping) and high.get("value") is not None else None


def _upper_limit(concept: str, res: Mapping[str, Any], spellings: list[str]) -> float | None:
    """The first reference range's upper limit, in the canonical unit (its own unit, else the
    value's)."""
    high = _range_high(res)
    if high is None:
        return None
    own = [u for u in (high.get("code"), high.get("unit")) if isinstance(u, str)]
    return units.to_canonical(concept, float(high["value"]), own or spellings)


def _coded_result(
    concept: str, when: datetime, item: Located, match: Match, terminology: Terminology
) -> CodedResult | None:
    res = item.resource
    _validate(item)
    value = res.get("valueCodeableConcept")
    values: list[tuple[str, str]] = []
    texts: list[str] = []
    if isinstance(value, Mapping):
        for coding in items(value.get("coding")):
            if isinstance(coding, Mapping):
                if isinstance(coding.get("system"), str) and isinstance(coding.get("code"), str):
                    values.append((coding["system"], coding["code"]))
                if isinstance(coding.get("display"), str):
                    texts.append(coding["display"])
        if isinstance(value.get("text"), str):
            texts.append(value["text"])
    if isinstance(res.get("valueString"), str):
        texts.append(res["valueString"])
    quantity = res.get("valueQuantity")
    amount = (
        float(quantity["value"])
        if isinstance(quantity, Mapping) and quantity.get("value") is not None
        else None
    )
    limit = _range_high(res)
    high = float(limit["value"]) if limit is not None else None
    flags = _interpretation(res)
    if not values and not texts and amount is None and not flags:
        return None
    positive = any(
        m.valueset == "positive-interpretation"
        for interpretation in items(res.get("interpretation"))
        for m in terminology.match(interpretation, "Observation")
    )
    value_sets = frozenset(m.valueset for m in terminology.match(value, "Observation"))
    return CodedResult(
        concept=concept,
        when=when,
        ref=_ref(res),
        code=match.code,
        values=tuple(values),
        text=normalise_text(" ".join(texts)),
        flags=flags,
        quantity=amount,
        high=high,
        flagged_positive=positive,
        value_sets=value_sets,
    )


def _medication(
    item: Located,
    terminology: Terminology,
    medication_index: Mapping[str, Mapping[str, Any]],
    *,
    draft: bool,
) -> MedicationFact | None:
    res = item.resource
    status = _text_or_none(res.get("status"))
    if status not in (DRAFT_MEDICATION if draft else ACTIVE_MEDICATION):
        return None
    concept = res.get("medicationCodeableConcept")
    reference = res.get("medicationReference")
    if concept is None and isinstance(reference, Mapping):
        concept = _referenced_medication_code(res, reference, medication_index)
    matches = terminology.match(concept, "MedicationRequest")
    if not matches:
        return None
    _validate(item)
    authored = parse_datetime(res.get("authoredOn"))
    rid = res.get("id")
    return MedicationFact(
        ref=_ref(res),
        id=rid if isinstance(rid, str) else None,
        valuesets=frozenset(m.valueset for m in matches),
        match=matches[0],
        display=_display(concept, matches[0]),
        status=status,
        authored=authored.date() if authored else None,
        resource=res,
        draft=draft,
    )


def _referenced_medication_code(
    request: Mapping[str, Any],
    reference: Mapping[str, Any],
    medication_index: Mapping[str, Mapping[str, Any]],
) -> Mapping[str, Any] | None:
    """The code of a Medication referenced by a MedicationRequest (contained or prefetched);
    falls back on the reference's display text."""
    ref = reference.get("reference")
    medication: Mapping[str, Any] | None = None
    if isinstance(ref, str) and ref.startswith("#"):
        for contained in items(request.get("contained")):
            if isinstance(contained, Mapping) and contained.get("id") == ref[1:]:
                medication = contained
    elif isinstance(ref, str):
        medication = (
            medication_index.get(ref[ref.find("Medication/") :]) if "Medication/" in ref else None
        )
    if medication is not None and isinstance(medication.get("code"), Mapping):
        return medication["code"]
    display = reference.get("display")
    return {"text": display} if isinstance(display, str) else None
