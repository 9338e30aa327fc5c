"""Renal status: one dated, sourced answer to "how well do this patient's kidneys work?".

Order of evidence (issue 2):
1. the latest eGFR observation (any eGFR LOINC code of the ``egfr`` value set);
2. otherwise the CKD-EPI 2021 creatinine equation applied to the latest creatinine, with the age
   at that date and the sex; a creatinine strictly more recent than the latest eGFR is preferred
   to it (a newer measurement is better evidence than an older one);
3. otherwise a coded CKD stage, end-stage renal disease or dialysis on the problem list;
4. otherwise unknown.

Dialysis recorded on the problem list is reported whatever the laboratory values say, since an
eGFR is not meaningful for a patient on dialysis. A laboratory result older than the configured
maximum age (12 months) is "stale"; when it is stale and a stage is coded, the coded stage is used.

CKD-EPI 2021 (race-free), Inker LA et al. NEJM 2021;385:1737-49, as published by the NKF
(kidney.org/ckd-epi-creatinine-equation-2021):
    eGFR = 142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age x 1.012 [if female]
    k = 0.7 (F) / 0.9 (M); a = -0.241 (F) / -0.302 (M); Scr in mg/dL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from cds_service.knowledge.loader import thresholds

if TYPE_CHECKING:
    from cds_service.fhir.record import ConditionFact, LabResult, PatientInfo

# Coded conditions, most severe first: value set -> GFR category it implies.
CODED_STAGES: tuple[tuple[str, str | None], ...] = (
    ("dialysis", "G5D"),
    ("ckd-stage-5", "G5"),
    ("ckd-stage-4", "G4"),
    ("ckd-stage-3", "G3"),
    ("renal-insufficiency-unstaged", None),
)


def ckd_epi_2021(creatinine_mg_dl: float, age_years: int, sex: str) -> float:
    """eGFR in mL/min/1.73 m2 by the race-free CKD-EPI 2021 creatinine equation."""
    if sex not in ("female", "male"):
        raise ValueError("CKD-EPI 2021 needs sex 'female' or 'male'")
    if creatinine_mg_dl <= 0 or age_years < 18:
        raise ValueError("CKD-EPI 2021 needs a positive creatinine and an adult age")
    female = sex == "female"
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / kappa
    egfr = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**age_years
    return egfr * 1.012 if female else egfr


def gfr_category(egfr: float) -> str:
    """KDIGO GFR category (G1, G2, G3a, G3b, G4, G5) for an eGFR value."""
    bounds: Mapping[str, float] = thresholds()["kdigo_gfr_categories"]
    for category, lower in sorted(bounds.items(), key=lambda kv: kv[1], reverse=True):
        if egfr >= lower:
            return category
    return "G5"


@dataclass(frozen=True)
class RenalStatus:
    """What is known of renal function, with where it comes from and how old it is."""

    source: str  # "measured" | "computed" | "coded" | "unknown"
    egfr: float | None = None
    category: str | None = None  # G1..G5, G3 (coded without a/b), G5D (dialysis)
    date: date | None = None
    stale: bool = False
    dialysis: bool = False
    lab: LabResult | None = None  # the eGFR or creatinine used
    age_at_test: int | None = None  # for computed eGFR
    sex: str | None = None  # for computed eGFR
    condition: ConditionFact | None = None  # the coded condition used, if any
    # Why the status is unknown: "no-renal-data", or "egfr-not-computable" with `missing`
    # naming what CKD-EPI 2021 lacked ("sex", "birth date", "adult age").
    reason: str | None = None
    missing: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return self.source != "unknown"


def assess(
    patient: PatientInfo,
    egfr: LabResult | None,
    creatinine: LabResult | None,
    conditions: list[ConditionFact],
    now: datetime,
) -> RenalStatus:
    """The renal status of a patient on `now` (see the module docstring for the order)."""
    max_age = timedelta(days=thresholds()["renal_result_max_age_days"])
    coded = _most_severe_coded(conditions)
    dialysis = coded is not None and coded[1] == "G5D"

    lab_status = _from_labs(patient, egfr, creatinine)
    if lab_status is not None and lab_status.lab is not None:
        stale = now - lab_status.lab.when > max_age
        if dialysis or (stale and coded is not None):
            return _from_condition(coded, dialysis, lab_status.lab)
        return RenalStatus(**{**lab_status.__dict__, "stale": stale, "dialysis": dialysis})
    if coded is not None:
        return _from_condition(coded, dialysis, None)
    if lab_status is not None:  # creatinine present but eGFR not computable
        return lab_status
    return RenalStatus(source="unknown", reason="no-renal-data")


def _from_labs(
    patient: PatientInfo, egfr: LabResult | None, creatinine: LabResult | None
) -> RenalStatus | None:
    if egfr is not None and (creatinine is None or creatinine.when.date() <= egfr.when.date()):
        return RenalStatus(
            source="measured",
            egfr=egfr.value,
            category=gfr_category(egfr.value),
            date=egfr.when.date(),
            lab=egfr,
        )
    if creatinine is None:
        return None
    age = patient.age_on(creatinine.when.date())
    missing = []
    if patient.sex not in ("female", "male"):
        missing.append("sex")
    if age is None:
        missing.append("birth date")
    elif age < 18:
        missing.append("adult age")  # CKD-EPI 2021 is for adults
    if missing or creatinine.value <= 0:
        if egfr is not None:  # fall back on the older measured eGFR
            return _from_labs(patient, egfr, None)
        return RenalStatus(
            source="unknown", reason="egfr-not-computable", missing=tuple(missing), lab=None
        )
    value = ckd_epi_2021(creatinine.value, age, patient.sex or "")
    return RenalStatus(
        source="computed",
        egfr=value,
        category=gfr_category(value),
        date=creatinine.when.date(),
        lab=creatinine,
        age_at_test=age,
        sex=patient.sex,
    )


def _most_severe_coded(conditions: list[ConditionFact]) -> tuple[ConditionFact, str | None] | None:
    for valueset, category in CODED_STAGES:
        for condition in conditions:
            if valueset in condition.valuesets:
                return condition, category
    return None


def _from_condition(
    coded: tuple[ConditionFact, str | None] | None, dialysis: bool, lab: LabResult | None
) -> RenalStatus:
    assert coded is not None
    condition, category = coded
    return RenalStatus(
        source="coded",
        category=category,
        date=condition.since,
        dialysis=dialysis,
        condition=condition,
        lab=lab,
    )
