"""Calcinosis context: a connective-tissue disease with documented calcinosis.

Sources: seed 000 (Smith G et al., AAD 2019 session F024: treatment by lesion size),
seed 001 (Scleroderma Manitoba, April 2024: general measures, inflammatory lesions, surgery and
shock-wave therapy; references Nowaczyk 2022, Elahmar 2022, Davuluri 2022), seed 002 (review of
SSc-associated calcinosis management: infection, ulceration, drug-by-drug evidence).
Evidence level: case reports, case series and small open studies; no randomised controlled
trial of any medical treatment (seed 001, seed 002).

Dermatomyositis (incl. juvenile, up to 70 % with calcinosis) and lupus also cause dystrophic
calcinosis: seed 003 (causes of dystrophic calcification), seed 004 (epidemiology).

When: an active, not refuted calcinosis condition AND an active systemic sclerosis (any form);
or, without SSc, an active dermatomyositis or systemic lupus.
Then: an `info` card summarising management by lesion type and size (variant `management` for
SSc, `management-other-ctd` naming the disease otherwise).
"""

from __future__ import annotations

from cds_service.fhir.record import PatientRecord
from cds_service.rules.base import Finding

RULE_ID = "calcinosis-context"


def has_systemic_sclerosis(record: PatientRecord) -> bool:
    return record.has_condition("systemic-sclerosis")


def has_documented_calcinosis(record: PatientRecord) -> bool:
    return record.has_condition("calcinosis")


OTHER_CTD = ("dermatomyositis", "systemic-lupus")


def evaluate(record: PatientRecord) -> list[Finding]:
    if not has_documented_calcinosis(record):
        return []
    calcinosis = record.conditions_in("calcinosis")
    if has_systemic_sclerosis(record):
        evidence = (*record.conditions_in("systemic-sclerosis"), *calcinosis)
        return [Finding(RULE_ID, "management", evidence=evidence)]
    for disease in OTHER_CTD:
        found = record.conditions_in(disease)
        if found:
            return [
                Finding(
                    RULE_ID,
                    "management-other-ctd",
                    facts={"disease": disease},
                    evidence=(*found, *calcinosis),
                )
            ]
    return []
