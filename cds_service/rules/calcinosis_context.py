"""Calcinosis context: active systemic sclerosis with documented calcinosis.

Sources: seed 000 (Smith G et al., AAD 2019 session F024: treatment by lesion size),
seed 001 (Scleroderma Manitoba, April 2024: general measures, inflammatory lesions, surgery and
shock-wave therapy; references Nowaczyk 2022, Elahmar 2022, Davuluri 2022), seed 002 (review of
SSc-associated calcinosis management: infection, ulceration, drug-by-drug evidence).
Evidence level: case reports, case series and small open studies; no randomised controlled
trial of any medical treatment (seed 001, seed 002).

When: the record has an active systemic sclerosis condition (any form) AND an active, not
refuted calcinosis condition.
Then: an `info` card summarising management by lesion type and size.
"""

from __future__ import annotations

from cds_service.fhir.record import PatientRecord
from cds_service.rules.base import Finding

RULE_ID = "calcinosis-context"


def has_systemic_sclerosis(record: PatientRecord) -> bool:
    return record.has_condition("systemic-sclerosis")


def has_documented_calcinosis(record: PatientRecord) -> bool:
    return record.has_condition("calcinosis")


def evaluate(record: PatientRecord) -> list[Finding]:
    if not (has_systemic_sclerosis(record) and has_documented_calcinosis(record)):
        return []
    evidence = (
        *record.conditions_in("systemic-sclerosis"),
        *record.conditions_in("calcinosis"),
    )
    return [Finding(RULE_ID, "management", evidence=evidence)]
