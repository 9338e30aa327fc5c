"""FHIR R4 resources -> a typed, normalised patient record (`build_record`), one reader per
resource type.

The facts it produces live in `cds_service.fhir.facts` (re-exported here, where other modules
have always imported them); the lenient reading of raw JSON and the R4B validation in
`cds_service.fhir.coerce`; the start-up warm-up of the models in `cds_service.fhir.warmup`.

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

import logging
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from cds_service.errors import InputError
from cds_service.fhir import units
from cds_service.fhir.coerce import items, parse_datetime, validation_problem
from cds_service.fhir.facts import (
    NOT_ALLOWED,
    CodedResult,
    ConditionFact,
    DataNote,
    LabResult,
    Located,
    MedicationFact,
    PatientInfo,
    PatientRecord,
    ProcedureFact,
)
from cds_service.fhir.warmup import warm_up
from cds_service.terminology import Match, Terminology, normalise_text

# The facts are re-exported: other modules import them from here.
__all__ = [
    "NOT_ALLOWED",
    "CodedResult",
    "ConditionFact",
    "DataNote",
    "LabResult",
    "Located",
    "MedicationFact",
    "PatientInfo",
    "PatientRecord",
    "ProcedureFact",
    "build_record",
    "medication_reference",
    "referenced_medication",
    "warm_up",
]

log = logging.getLogger(__name__)

INACTIVE_CLINICAL = frozenset({"inactive", "remission", "resolved"})
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
EXCLUDED_OBSERVATION = frozenset({"entered-in-error", "cancelled"})
ACTIVE_MEDICATION = frozenset({"active", "on-hold"})
DRAFT_MEDICATION = frozenset({"draft", "active", "on-hold"})


# --------------------------------------------------------------------------- helpers


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


def _readable(item: Located, notes: list[DataNote], concept: str = "") -> bool:
    """Whether a resource the rules would read is valid R4 (after coercion). One that is not
    is left out of the reasoning and reported as a note (shown on a card); the log names its
    type and field path, never a value."""
    problem = validation_problem(item.resource)
    if problem is None:
        return True
    field_path, _message = problem
    kind = str(item.resource.get("resourceType"))
    log.warning(
        "left out an unreadable FHIR resource: type=%s field=%s",
        kind,
        field_path,
        extra={"resource_type": kind, "field": field_path},
    )
    notes.append(
        DataNote(
            kind="unreadable",
            concept=concept,
            ref=_ref(item.resource),
            detail=field_path.split(".")[0].split("[")[0],
            resource_type=kind,
        )
    )
    return False


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
    notes: Iterable[DataNote] = (),
) -> PatientRecord:
    """Screen, validate and normalise the resources of one patient, and the draft orders under
    review when there are (order hooks); `notes` are what prefetch resolution already knows
    was not read (searches left incomplete)."""
    patient = PatientInfo(id=patient_id)
    conditions: list[ConditionFact] = []
    observations: dict[str, list[tuple[datetime, Located, Match]]] = {}
    medications: list[MedicationFact] = []
    notes = list(notes)
    medication_index: dict[str, Mapping[str, Any]] = {}
    med_requests: list[Located] = []
    subject = f"Patient/{patient_id}"
    codes: dict[tuple[Any, ...], list[Match]] = {}  # Observation.code lookups
    procedures: list[ProcedureFact] = []  # dialysis sessions, kidney transplantations

    for item in resources:
        res = item.resource
        kind = res.get("resourceType")
        if kind == "Patient":
            patient = _patient(item, patient_id, notes)
        elif kind == "Medication" and isinstance(res.get("id"), str):
            medication_index[f"Medication/{res['id']}"] = res
        elif kind == "Condition":
            _check_subject(item, subject)
            fact = _condition(item, terminology, notes)
            if fact is not None:
                conditions.append(fact)
        elif kind == "Observation":
            _check_subject(item, subject)
            _screen_observation(item, terminology, observations, codes, notes)
        elif kind == "MedicationRequest":
            _check_subject(item, subject)
            med_requests.append(item)
        elif kind == "Procedure":
            _check_subject(item, subject)
            procedure = _procedure(item, terminology, notes)
            if procedure is not None:
                procedures.append(procedure)

    for item in med_requests:
        fact = _medication(item, terminology, medication_index, notes, draft=False)
        if fact is not None:
            medications.append(fact)
    draft_facts: list[MedicationFact] | None = None
    if drafts is not None:
        draft_facts = []
        for item in drafts:
            if item.resource.get("resourceType") != "MedicationRequest":
                continue  # other draft orders (ServiceRequest...) are not checked yet
            _check_subject(item, subject)
            fact = _medication(item, terminology, medication_index, notes, draft=True)
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
                coded = _coded_result(concept, when, item, match, terminology, notes)
                if coded is not None:
                    results[concept] = coded
                    break

    return PatientRecord(
        patient=patient,
        now=now,
        conditions=tuple(conditions),
        labs=labs,
        medications=tuple(medications),
        notes=tuple(notes),
        drafts=tuple(draft_facts) if draft_facts is not None else None,
        results=results,
        procedures=tuple(procedures),
    )


def _patient(item: Located, patient_id: str, notes: list[DataNote]) -> PatientInfo:
    res = item.resource
    if isinstance(res.get("id"), str) and res["id"] != patient_id:
        raise InputError("Patient.id does not match context.patientId", path=f"{item.path}.id")
    if not _readable(item, notes):
        return PatientInfo(id=patient_id)
    birth = parse_datetime(res.get("birthDate"))
    gender = res.get("gender")
    exact = birth is not None and len(res["birthDate"]) >= 10
    return PatientInfo(
        id=patient_id,
        birth_date=birth.date() if birth and exact else None,
        sex=gender if isinstance(gender, str) else None,
        birth_range=_birth_range(res["birthDate"]) if birth and not exact else None,
        deceased=res.get("deceasedBoolean") is True or isinstance(res.get("deceasedDateTime"), str),
    )


def _birth_range(partial: str) -> tuple[date, date] | None:
    """The earliest and latest birth dates a year-only ("1960") or year-month ("1960-06")
    birthDate allows."""
    year = int(partial[:4])
    if len(partial) == 4:
        return date(year, 1, 1), date(year, 12, 31)
    month = int(partial[5:7])
    following = date(year + month // 12, month % 12 + 1, 1)
    return date(year, month, 1), date.fromordinal(following.toordinal() - 1)


def _condition(
    item: Located, terminology: Terminology, notes: list[DataNote]
) -> ConditionFact | None:
    res = item.resource
    matches = terminology.match(res.get("code"), "Condition") or _whole_text_match(res.get("code"))
    matches = [m for m in matches if m.valueset not in BODY_SITE_VALUESETS]
    if not matches:
        return None
    clinical = _status_code(res.get("clinicalStatus")) or ("inactive" if _abated(res) else "active")
    verification = _status_code(res.get("verificationStatus"))
    if verification in EXCLUDED_VERIFICATION:
        return None
    if clinical in INACTIVE_CLINICAL:
        # A chronic disease stays context when quiescent (see CHRONIC_COUNTS).
        matches = [m for m in matches if clinical in CHRONIC_COUNTS.get(m.valueset, ())]
        if not matches:
            return None
    if not _readable(item, notes, matches[0].valueset):
        return None
    onset = parse_datetime(res.get("onsetDateTime"))
    recorded = parse_datetime(res.get("recordedDate"))
    since = onset or recorded
    dates = [d.date() for d in (onset, recorded) if d is not None]
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
        asserted=max(dates) if dates else None,
        **_body_site(res.get("bodySite"), terminology),
    )


# Value sets of body structures: read in Condition.bodySite only, never as a Condition.code.
BODY_SITE_VALUESETS = frozenset({"finger-structure"})


def _body_site(sites: Any, terminology: Terminology) -> dict[str, Any]:
    """The body-site value sets of Condition.bodySite and its normalised text and displays."""
    found: set[str] = set()
    texts: list[str] = []
    for site in items(sites):
        if not isinstance(site, Mapping):
            continue
        found.update(
            m.valueset
            for m in terminology.match(site, "Condition")
            if m.by == "code" and m.valueset in BODY_SITE_VALUESETS
        )
        texts.append(site.get("text"))
        texts += [c.get("display") for c in items(site.get("coding")) if isinstance(c, Mapping)]
    text = normalise_text(" ".join(t for t in texts if isinstance(t, str)))
    return {"body_sites": frozenset(found), "body_site_text": text}


# Words that name a condition only when they are the whole text of the concept: "CREST" alone
# is the CREST syndrome (limited cutaneous SSc), while "iliac crest pain" is not.
WHOLE_TEXT = {"crest": "systemic-sclerosis"}


def _whole_text_match(concept: Any) -> list[Match]:
    if not isinstance(concept, Mapping):
        return []
    texts = [concept.get("text")] + [
        c.get("display") for c in items(concept.get("coding")) if isinstance(c, Mapping)
    ]
    for text in texts:
        if isinstance(text, str) and normalise_text(text) in WHOLE_TEXT:
            return [Match(WHOLE_TEXT[normalise_text(text)], "text")]
    return []


ABATEMENT = (
    "abatementDateTime",
    "abatementAge",
    "abatementPeriod",
    "abatementRange",
    "abatementString",
)


def _abated(res: Mapping[str, Any]) -> bool:
    """An abatement[x] is recorded (without a clinicalStatus, the condition is then inactive:
    FHIR R4 invariant con-4 allows only inactive, remission or resolved with an abatement)."""
    return any(res.get(key) not in (None, "", {}) for key in ABATEMENT)


# Value sets of chronic diseases and the inactive clinical statuses under which they still
# count. Systemic sclerosis does not resolve: "remission" and "inactive" (quiescent disease,
# or an abatement recorded without a status) still make the SSc context of calcinosis; an
# explicit "resolved" is respected. Calcinosis "in remission" keeps counting (deposits persist
# and recur; seeds 001/003), a "resolved" or "inactive" calcinosis does not.
CHRONIC_COUNTS: Mapping[str, tuple[str, ...]] = {
    "systemic-sclerosis": ("remission", "inactive"),
    "calcinosis": ("remission",),
}


def _procedure(
    item: Located, terminology: Terminology, notes: list[DataNote]
) -> ProcedureFact | None:
    """A Procedure of a value set the renal status reads, when it took place (status not
    entered-in-error / not-done / preparation) and has a performed date."""
    res = item.resource
    status = _text_or_none(res.get("status"))
    if status in EXCLUDED_PROCEDURE:
        return None
    matches = terminology.match(res.get("code"), "Procedure")
    if not matches:
        return None
    period = res.get("performedPeriod")
    performed = parse_datetime(res.get("performedDateTime")) or (
        (parse_datetime(period.get("end")) or parse_datetime(period.get("start")))
        if isinstance(period, Mapping)
        else None
    )
    if performed is None:
        return None  # an undated procedure says nothing about the current renal status
    if not _readable(item, notes, matches[0].valueset):
        return None
    return ProcedureFact(
        ref=_ref(res),
        valuesets=frozenset(m.valueset for m in matches),
        match=matches[0],
        display=_display(res.get("code"), matches[0]),
        status=status or "unknown",
        performed=performed.date(),
    )


EXCLUDED_PROCEDURE = frozenset({"entered-in-error", "not-done", "preparation"})


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
    notes: list[DataNote],
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
        _readable(item, notes, matches[0].valueset)  # a malformed date is reported
        return
    for match in matches:
        observations.setdefault(match.valueset, []).append((when, item, match))


def _lab_result(
    concept: str, when: datetime, item: Located, match: Match, notes: list[DataNote]
) -> LabResult | None:
    res = item.resource
    read = _quantity(concept, res)
    if read is None:
        return None  # no value (dataAbsentReason, or text that is not a number): an older one
    if not _readable(item, notes, concept):
        return None
    comparator, sent, spellings = read
    value = float(sent)
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
        low=_lower_limit(concept, res, spellings),
        flags=_interpretation(res),
        focus=tuple(
            f["reference"]
            for f in items(res.get("focus"))
            if isinstance(f, Mapping) and isinstance(f.get("reference"), str)
        ),
        comparator=comparator,
    )


def _quantity(concept: str, res: Mapping[str, Any]) -> tuple[str | None, Any, list[str]] | None:
    """(comparator, value, unit spellings) of a result sent as valueQuantity (its comparator
    kept) or as valueString ("<15", "> 60 mL/min/1.73m2"). A text eGFR without a unit is read
    in mL/min/1.73 m2, the only unit an eGFR is reported in; any other text value needs its
    unit (never guessed)."""
    quantity = res.get("valueQuantity")
    if isinstance(quantity, Mapping) and quantity.get("value") is not None:
        value = quantity["value"]  # a number once _readable() has passed
        spellings = [u for u in (quantity.get("code"), quantity.get("unit")) if isinstance(u, str)]
        comparator = quantity.get("comparator")
        return (comparator if comparator in units.COMPARATORS else None), value, spellings
    text = res.get("valueString")
    parsed = units.parse_text_value(text) if isinstance(text, str) else None
    if parsed is None:
        return None
    comparator, value, unit = parsed
    if unit is None and concept == "egfr":
        unit = "mL/min/1.73m2"
    return comparator, value, [unit] if unit else []


def _interpretation(res: Mapping[str, Any]) -> frozenset[str]:
    codes = set()
    for concept in items(res.get("interpretation")):
        for coding in (items(concept.get("coding"))) if isinstance(concept, Mapping) else ():
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                codes.add(coding["code"])
    return frozenset(codes)


def _range_bound(res: Mapping[str, Any], bound: str) -> Mapping[str, Any] | None:
    """The `high` or `low` Quantity of the first reference range, when the lab sent one."""
    ranges = res.get("referenceRange")
    if not isinstance(ranges, list) or not ranges or not isinstance(ranges[0], Mapping):
        return None
    limit = ranges[0].get(bound)
    return limit if isinstance(limit, Mapping) and limit.get("value") is not None else None


def _range_high(res: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The `high` Quantity of the first reference range, when the lab sent one."""
    return _range_bound(res, "high")


def _limit(concept: str, res: Mapping[str, Any], spellings: list[str], bound: str) -> float | None:
    """The first reference range's `bound` ("high" or "low"), in the canonical unit (its own
    unit, else the value's)."""
    limit = _range_bound(res, bound)
    if limit is None:
        return None
    own = [u for u in (limit.get("code"), limit.get("unit")) if isinstance(u, str)]
    return units.to_canonical(concept, float(limit["value"]), own or spellings)


def _upper_limit(concept: str, res: Mapping[str, Any], spellings: list[str]) -> float | None:
    """The first reference range's upper limit, in the canonical unit (its own unit, else the
    value's)."""
    return _limit(concept, res, spellings, "high")


def _lower_limit(concept: str, res: Mapping[str, Any], spellings: list[str]) -> float | None:
    """The first reference range's lower limit (issue 14: a low calcium), in the canonical
    unit (its own unit, else the value's)."""
    return _limit(concept, res, spellings, "low")


def _coded_result(
    concept: str,
    when: datetime,
    item: Located,
    match: Match,
    terminology: Terminology,
    notes: list[DataNote],
) -> CodedResult | None:
    res = item.resource
    if not _readable(item, notes, concept):
        return None
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
    notes: list[DataNote],
    *,
    draft: bool,
) -> MedicationFact | None:
    res = item.resource
    status = _text_or_none(res.get("status"))
    if status not in (DRAFT_MEDICATION if draft else ACTIVE_MEDICATION):
        return None
    concept = res.get("medicationCodeableConcept")
    medication: Mapping[str, Any] | None = None
    reference = res.get("medicationReference")
    if not isinstance(concept, Mapping) and isinstance(reference, Mapping):
        medication = referenced_medication(res, reference, medication_index)
        if medication is None:
            display = reference.get("display")
            concept = {"text": display} if isinstance(display, str) else None
        else:
            code = medication.get("code")
            concept = code if isinstance(code, Mapping) else None
    if medication is None and not _names_something(concept):
        # Nothing says what this order is: never silence (issue 11).
        field = "medicationReference" if isinstance(reference, Mapping) else "medication[x]"
        notes.append(
            DataNote(
                kind="unidentified-order",
                concept="",
                ref=_ref(res),
                detail=field,
                resource_type="MedicationRequest",
            )
        )
        return None
    matches = terminology.match_medication(concept, medication, res)
    if not matches:
        return None
    if not _readable(item, notes, matches[0].valueset):
        return None
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


def _names_something(concept: Any) -> bool:
    """Whether a CodeableConcept carries a text or a coding with a code or a display."""
    if not isinstance(concept, Mapping):
        return False
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return True
    return any(
        isinstance(coding, Mapping)
        and any(isinstance(coding.get(k), str) and coding[k].strip() for k in ("code", "display"))
        for coding in items(concept.get("coding"))
    )


def medication_reference(request: Mapping[str, Any]) -> str | None:
    """The `Medication/{id}` a MedicationRequest points to, when it points outside itself
    (not to a contained resource); None otherwise."""
    reference = request.get("medicationReference")
    ref = reference.get("reference") if isinstance(reference, Mapping) else None
    if not isinstance(ref, str) or ref.startswith("#") or "Medication/" not in ref:
        return None
    tail = ref[ref.rfind("Medication/") :]
    return tail.split("/_history/")[0]


def referenced_medication(
    request: Mapping[str, Any],
    reference: Mapping[str, Any],
    medication_index: Mapping[str, Mapping[str, Any]],
) -> Mapping[str, Any] | None:
    """The Medication a MedicationRequest references: contained (`#id`), or among the
    Medications of the prefetch (search `_include` entries) and those fetched by id."""
    ref = reference.get("reference")
    if isinstance(ref, str) and ref.startswith("#"):
        for contained in items(request.get("contained")):
            if (
                isinstance(contained, Mapping)
                and contained.get("resourceType") == "Medication"
                and contained.get("id") == ref[1:]
            ):
                return contained
        return None
    key = medication_reference(request)
    return medication_index.get(key) if key else None
