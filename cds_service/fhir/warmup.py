"""Warming up the FHIR models at start-up, so that the first request does not pay for it."""

from __future__ import annotations

from cds_service.fhir.coerce import MODELS

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
    {
        "resourceType": "Procedure",
        "status": "completed",
        "subject": _SUBJECT,
        "code": _CONCEPT,
        "performedPeriod": {"start": "2020-01-01", "end": "2020-01-01"},
    },
)


def warm_up() -> None:
    """Validate one small resource per model once, at start-up: fhir.resources imports its
    nested element models on first use, which would otherwise cost the first request ~20 ms."""
    for resource in _WARM_UP:
        MODELS[resource["resourceType"]].model_validate(resource)
