"""A patient's chart as the rules read it: the facts of the FHIR record (`fhir/record.py`) and
the clinical facts this service derives from them (today the renal status)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime

from cds_service.fhir.record import DataNote, Located, PatientRecord, build_record
from cds_service.knowledge import renal
from cds_service.terminology import Terminology


@dataclass(frozen=True, kw_only=True)
class Chart(PatientRecord):
    """The record's facts, plus what the knowledge layer derives from them."""

    renal: renal.RenalStatus


def derive(record: PatientRecord) -> Chart:
    """The chart of a record: its facts and the clinical facts derived from them."""
    status = renal.assess(
        record.patient,
        record.labs.get("egfr"),
        record.labs.get("creatinine"),
        list(record.conditions),
        record.now,
        record.procedures,
    )
    facts = {f.name: getattr(record, f.name) for f in fields(PatientRecord)}
    return Chart(**facts, renal=status)


def build_chart(
    resources: Iterable[Located],
    patient_id: str,
    terminology: Terminology,
    now: datetime,
    drafts: Iterable[Located] | None = None,
    notes: Iterable[DataNote] = (),
) -> Chart:
    """`fhir.record.build_record`, then `derive`."""
    return derive(build_record(resources, patient_id, terminology, now, drafts, notes))
