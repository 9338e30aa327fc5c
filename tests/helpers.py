"""Small builders of FHIR R4 resources for unit tests (the fixtures cover whole patients)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cds_service.fhir.record import Located
from cds_service.knowledge.chart import Chart, build_chart
from cds_service.terminology import Terminology
from tests.conftest import NOW

PID = "p1"
TERMINOLOGY = Terminology.load()
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def when(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat()


def patient(gender: str | None = "female", birth: str | None = "1960-06-15") -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": PID}
    if gender:
        res["gender"] = gender
    if birth:
        res["birthDate"] = birth
    return res


def condition(
    system: str,
    code: str,
    rid: str = "c1",
    clinical: str | None = "active",
    verification: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": system, "code": code}]} if code else {"text": text},
    }
    if clinical:
        res["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        }
    if verification:
        res["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        }
    return res


def observation(
    code: str,
    value: float,
    unit: str,
    days_ago: float,
    rid: str = "o1",
    status: str = "final",
    high: float | None = None,
    flags: tuple[str, ...] = (),
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": when(days_ago),
        "valueQuantity": {"value": value, "unit": unit},
    }
    if high is not None:
        res["referenceRange"] = [{"high": {"value": high, "unit": unit}}]
    if flags:
        res["interpretation"] = [{"coding": [{"system": V3, "code": f} for f in flags]}]
    return res


def antibody(code: str, text: str, days_ago: float = 30, rid: str = "ab") -> dict[str, Any]:
    """A qualitative antibody result reported as text ("Positive", "Negative")."""
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": when(days_ago),
        "valueCodeableConcept": {"text": text},
    }


def drug(
    code: str, rid: str = "m1", system: str = RXNORM, status: str = "active"
) -> dict[str, Any]:
    """An order coded with one RxNorm (default) or ATC code."""
    return medication(
        status, rid, medicationCodeableConcept={"coding": [{"system": system, "code": code}]}
    )


def egfr(
    value: float, days_ago: float = 10, rid: str = "egfr", status: str = "final"
) -> dict[str, Any]:
    return observation("98979-8", value, "mL/min/{1.73_m2}", days_ago, rid, status)


def creatinine(
    value: float, unit: str = "mg/dL", days_ago: float = 10, rid: str = "creat"
) -> dict[str, Any]:
    code = "14682-9" if "mol" in unit else "2160-0"
    return observation(code, value, unit, days_ago, rid)


def medication(status: str = "active", rid: str = "m1", **concept: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
    }
    if concept:
        res.update(concept)
    else:
        res["medicationCodeableConcept"] = {
            "coding": [{"system": RXNORM, "code": "612", "display": "aluminum hydroxide"}]
        }
    return res


def record(*resources: dict[str, Any], now: datetime = NOW) -> Chart:
    located = [Located(f"prefetch.test.entry[{i}].resource", r) for i, r in enumerate(resources)]
    return build_chart(located, PID, TERMINOLOGY, now)


def variants(rule_id: str, *resources: dict[str, Any], now: datetime = NOW) -> list[str]:
    """The card variants one rule gives for a record of these resources (add the Patient)."""
    from cds_service.rules import RULES  # the registry loads the whole knowledge base

    return [finding.variant for finding in RULES[rule_id](record(*resources, now=now))]


def lesion(size: float, unit: str, focus: str = "c", rid: str = "size") -> dict[str, Any]:
    """A lesion-size measurement (LOINC 39126-8) pointing at the Condition `focus`."""
    return {
        **observation("39126-8", size, unit, 3, rid),
        "focus": [{"reference": f"Condition/{focus}"}],
    }
