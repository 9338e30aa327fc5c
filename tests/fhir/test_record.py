"""FHIR R4 -> patient record: status rules, latest value per concept, units, recognition."""

from __future__ import annotations

import pytest

from cds_service.fhir.coerce import validation_problem
from cds_service.fhir.facts import MedicationFact, PatientRecord
from tests.helpers import (
    ICD10CM,
    RXNORM,
    SNOMED,
    condition,
    creatinine,
    egfr,
    medication,
    observation,
    patient,
    record,
)


def aluminium(rec: PatientRecord) -> list[MedicationFact]:
    """The record's active orders of an aluminium hydroxide."""
    return [m for m in rec.medications if "aluminium-hydroxide" in m.valuesets]


@pytest.mark.parametrize(
    ("clinical", "verification", "counts"),
    [
        ("active", "confirmed", True),
        ("recurrence", None, True),
        ("relapse", "provisional", True),
        (None, None, True),  # no clinicalStatus: assume it is on the active problem list
        ("inactive", None, False),
        ("remission", None, False),
        ("resolved", "confirmed", False),
        ("active", "refuted", False),
        (None, "entered-in-error", False),
    ],
)
def test_condition_statuses(clinical: str | None, verification: str | None, counts: bool) -> None:
    # CKD stage 4: not a disease whose quiescent phases still count (see CHRONIC_COUNTS).
    rec = record(condition(SNOMED, "431857002", clinical=clinical, verification=verification))
    assert rec.has_condition("ckd-stage-4") is counts


def test_condition_recognised_by_icd_descendant_and_by_text() -> None:
    rec = record(
        condition("http://hl7.org/fhir/sid/icd-10", "M34.81", rid="a"),
        condition("", "", rid="b", text="Calcinose cutanée des doigts"),
    )
    assert rec.has_condition("systemic-sclerosis")
    calcinosis = rec.conditions_in("calcinosis")[0]
    assert calcinosis.match.by == "text"


def test_text_is_not_consulted_when_a_code_is_recognised() -> None:
    coded = condition(ICD10CM, "L94.2")
    coded["code"]["text"] = "Systemic sclerosis follow-up"
    rec = record(coded)
    assert rec.has_condition("calcinosis")
    assert not rec.has_condition("systemic-sclerosis")


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        ("final", True),
        ("amended", True),
        ("preliminary", True),
        ("entered-in-error", False),
        ("cancelled", False),
    ],
)
def test_observation_statuses(status: str, counts: bool) -> None:
    rec = record(patient(), egfr(40, status=status))
    assert ("egfr" in rec.labs) is counts


def test_latest_value_by_date_not_by_position() -> None:
    rec = record(patient(), egfr(45, days_ago=5, rid="new"), egfr(80, days_ago=300, rid="old"))
    assert rec.labs["egfr"].ref == "Observation/new"
    rec = record(patient(), egfr(80, days_ago=300, rid="old"), egfr(45, days_ago=5, rid="new"))
    assert rec.labs["egfr"].ref == "Observation/new"


def test_entered_in_error_latest_falls_back_to_previous_valid() -> None:
    rec = record(
        patient(),
        egfr(85, days_ago=1, rid="bad", status="entered-in-error"),
        egfr(28, days_ago=40, rid="ok"),
    )
    assert rec.labs["egfr"].value == 28


@pytest.mark.parametrize(
    ("value", "unit", "mg_dl"),
    [
        (1.2, "mg/dL", 1.2),
        (1.2, "mg/dl", 1.2),
        (106.08, "umol/L", 1.2),
        (106.08, "µmol/L", 1.2),
        (106.08, "μmol/l", 1.2),
        (0.10608, "mmol/L", 1.2),
    ],
)
def test_creatinine_units_to_mg_dl(value: float, unit: str, mg_dl: float) -> None:
    rec = record(patient(), creatinine(value, unit))
    assert rec.labs["creatinine"].value == pytest.approx(mg_dl)
    assert rec.labs["creatinine"].measured_unit == unit


@pytest.mark.parametrize(
    "unit", ["mL/min/{1.73_m2}", "mL/min/1.73m2", "ml/min/1,73 m²", "mL/min/1.73 m^2"]
)
def test_egfr_unit_spellings(unit: str) -> None:
    rec = record(patient(), observation("98979-8", 50, unit, 3))
    assert rec.labs["egfr"].value == 50


def test_unknown_unit_is_not_guessed_but_reported() -> None:
    rec = record(
        patient(),
        creatinine(1.4, "mg%", days_ago=2, rid="odd"),
        creatinine(0.9, days_ago=100, rid="ok"),
    )
    assert rec.labs["creatinine"].ref == "Observation/ok"
    assert [(n.kind, n.ref, n.detail) for n in rec.notes] == [
        ("unit-not-recognised", "Observation/odd", "mg%")
    ]


def test_egfr_without_bsa_indexing_is_not_accepted() -> None:
    rec = record(patient(), observation("98979-8", 50, "mL/min", 3))
    assert "egfr" not in rec.labs
    assert rec.notes[0].detail == "mL/min"


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        ("active", True),
        ("on-hold", True),
        ("stopped", False),
        ("completed", False),
        ("cancelled", False),
        ("entered-in-error", False),
        ("draft", False),
    ],
)
def test_medication_statuses(status: str, counts: bool) -> None:
    assert bool(aluminium(record(medication(status)))) is counts


@pytest.mark.parametrize(
    "concept",
    [
        {
            "medicationCodeableConcept": {
                "coding": [{"system": "http://www.whocc.no/atc", "code": "A02AB01"}]
            }
        },
        {"medicationCodeableConcept": {"text": "HYDROXYDE D'ALUMINIUM 30 mL x4/j"}},
        {
            "medicationCodeableConcept": {
                "text": "Aluminum Hydroxide 320 MG per 5 ML Oral Suspension"
            }
        },
        {
            "medicationCodeableConcept": {
                "coding": [{"system": "urn:local", "code": "42", "display": "Algeldrate gel"}]
            }
        },
        {
            "medicationReference": {"reference": "#med"},
            "contained": [
                {
                    "resourceType": "Medication",
                    "id": "med",
                    "code": {
                        "coding": [
                            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "612"}
                        ]
                    },
                }
            ],
        },
        {
            "medicationReference": {
                "reference": "Medication/x",
                "display": "aluminium hydroxide suspension",
            }
        },
    ],
    ids=[
        "atc",
        "french-text",
        "english-text",
        "local-code-display",
        "contained",
        "reference-display",
    ],
)
def test_medication_recognition(concept: dict) -> None:
    meds = aluminium(record(medication(**concept)))
    assert len(meds) == 1


def test_medication_reference_to_a_prefetched_medication() -> None:
    med = {
        "resourceType": "Medication",
        "id": "x",
        "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "A02AB01"}]},
    }
    rec = record(med, medication(medicationReference={"reference": "Medication/x"}))
    assert aluminium(rec)[0].match.label == "ATC A02AB01"


def test_unrelated_drug_text_is_not_matched() -> None:
    rec = record(medication(medicationCodeableConcept={"text": "Magnesium hydroxide"}))
    assert aluminium(rec) == []


def test_invalid_resource_is_left_out_and_named() -> None:
    bad = egfr(30)
    bad["effectiveDateTime"] = "yesterday"
    bad["valueQuantity"]["value"] = "thirty"
    rec = record(patient(), bad)
    assert "egfr" not in rec.labs
    assert [(n.kind, n.concept, n.detail, n.resource_type) for n in rec.notes] == [
        ("unreadable", "egfr", "effectiveDateTime", "Observation")
    ]


def test_single_object_where_r4_wants_a_list_is_coerced() -> None:
    draft = medication(
        status="draft",
        category={"coding": [{"code": "outpatient"}]},
        medicationCodeableConcept={
            "coding": {"system": "http://www.whocc.no/atc", "code": "A02AB01"}
        },
    )
    rec = record(patient(), draft)
    assert rec.notes == ()
    assert validation_problem(draft) is None
    assert rec.medications == ()  # a draft at patient-view is not an active order
    broken = medication(
        dosageInstruction=[{"doseAndRate": "two"}],
        medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "612"}]},
    )
    assert validation_problem(broken) is not None
    rec = record(patient(), broken)
    assert aluminium(rec) == []
    assert [(n.kind, n.concept, n.detail) for n in rec.notes] == [
        ("unreadable", "aluminium-hydroxide", "dosageInstruction")
    ]


def test_unrelated_invalid_resources_are_not_parsed() -> None:
    # Only what the rules read is validated: an invalid heart-rate observation is ignored.
    noise = observation("8867-4", "fast", "/min", 1)  # type: ignore[arg-type]
    assert record(patient(), noise).labs == {}


def test_patient_age_and_sex() -> None:
    rec = record(patient("male", "1960-11-24"))
    assert rec.patient.sex == "male"
    assert rec.patient.age_on(rec.now.date()) == 65  # birthday tomorrow


def test_ligatures_are_read_as_two_letters() -> None:
    rec = record(condition("", "", text="Œsophagite peptique"))
    assert rec.has_condition("oesophageal-disease")
