"""Renal status: one dated, sourced answer to "how well do this patient's kidneys work?".

Order of evidence (issues 2 and 11):
1. dialysis: an active dialysis Condition, or a dialysis session (Procedure) performed within
   the last 90 days, unless a kidney transplant (Condition or Procedure) is dated after it (or
   either date is unknown: a transplant follows dialysis). An eGFR is not meaningful for a
   patient on dialysis, so dialysis outweighs any laboratory value; a dialysis that ended
   (abated Condition, transplant after it, last session more than 90 days ago) does not;
2. the latest eGFR observation (any eGFR LOINC code of the ``egfr`` value set), or the CKD-EPI
   2021 equation applied to the latest creatinine with the age at that date and the sex, when
   that creatinine is strictly more recent (a newer measurement is better evidence);
3. a coded CKD stage / end-stage renal disease on the problem list, when no laboratory result
   is usable, or when the laboratory result is stale (older than 12 months), or when the stage
   was asserted (latest of onset and recordedDate) after the laboratory result: newest wins,
   and the status names the evidence it did not use (``superseded``);
4. otherwise unknown.

Comparators (``<15``, ``>60``): the status keeps the bound and the comparator; its category is
the category just beyond the bound (``<15`` -> G5, ``>60`` -> G2, shown "G1-G2"), and rules
compare ``rule_egfr``, a value just beyond the bound (``<15`` is below 15; ``>60`` is not below
60, so it clears every renal criterion whose limit is 60 or less). A creatinine bound gives the
opposite eGFR bound (``creatinine < 0.5`` -> ``eGFR > CKD-EPI(0.5)``).

A year-only or year-month birthDate gives an age range at the test date: CKD-EPI 2021 is
computed at both ends, and used (at the oldest age: the lower eGFR) when both give the same
KDIGO category; otherwise the eGFR is "not computable" (missing "exact birth date").

CKD-EPI 2021 (race-free), Inker LA et al. NEJM 2021;385:1737-49, as published by the NKF
(kidney.org/ckd-epi-creatinine-equation-2021):
    eGFR = 142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age x 1.012 [if female]
    k = 0.7 (F) / 0.9 (M); a = -0.241 (F) / -0.302 (M); Scr in mg/dL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cds_service.knowledge.loader import thresholds

if TYPE_CHECKING:
    from cds_service.fhir.record import ConditionFact, LabResult, PatientInfo, ProcedureFact

# A dialysis session older than this no longer makes the patient "on dialysis" (maintenance
# dialysis runs several sessions a week; 90 days is the KDIGO threshold that separates acute
# kidney disease from chronic kidney disease, so a patient without a session for that long is
# not on maintenance dialysis).
DIALYSIS_SESSION_MAX_AGE_DAYS = 90

# Coded conditions, most severe first: value set -> GFR category it implies.
CODED_STAGES: tuple[tuple[str, str | None], ...] = (
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


def _categories() -> list[tuple[str, float]]:
    """KDIGO categories with their lower bounds, highest first."""
    bounds: Mapping[str, float] = thresholds()["kdigo_gfr_categories"]
    return sorted(bounds.items(), key=lambda kv: kv[1], reverse=True)


def gfr_category(egfr: float) -> str:
    """KDIGO GFR category (G1, G2, G3a, G3b, G4, G5) for an eGFR value."""
    for category, lower in _categories():
        if egfr >= lower:
            return category
    return "G5"


def beyond(value: float, comparator: str | None) -> float:
    """A value just beyond `value` in the comparator's direction ("<15" -> just below 15)."""
    if comparator == "<":
        return math.nextafter(value, -math.inf)
    if comparator == ">":
        return math.nextafter(value, math.inf)
    return value


def category_span(egfr: float, comparator: str | None) -> str:
    """The KDIGO categories an eGFR bound allows: "G2" for 75, "G1-G2" for ">60", "G5" for
    "<15", "G4-G5" for "<30"."""
    own = gfr_category(beyond(egfr, comparator))
    names = [c for c, _ in _categories()]
    if comparator in (">", ">=") and own != names[0]:
        return f"{names[0]}-{own}"
    if comparator in ("<", "<=") and own != names[-1]:
        return f"{own}-{names[-1]}"
    return own


FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(frozen=True)
class RenalStatus:
    """What is known of renal function, with where it comes from and how old it is."""

    source: str  # "measured" | "computed" | "coded" | "unknown"
    egfr: float | None = None  # the value, or the bound when `comparator` is set
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
    comparator: str | None = None  # "<15": eGFR below 15 (kept from the laboratory result)
    age_range: tuple[int, int] | None = None  # computed from a partial birth date
    procedure: ProcedureFact | None = None  # the dialysis session used, if any
    # Evidence weighed and not used because older (the coded stage a newer eGFR outweighed,
    # or the laboratory result a newer coded stage outweighed; the ended dialysis).
    superseded: Any = None

    @property
    def known(self) -> bool:
        return self.source != "unknown"

    @property
    def rule_egfr(self) -> float | None:
        """The eGFR rules compare with their limits: the value, or just beyond the bound."""
        return None if self.egfr is None else beyond(self.egfr, self.comparator)

    @property
    def category_label(self) -> str | None:
        """The category as cards show it ("G1-G2" for "> 60")."""
        if self.egfr is None or self.comparator is None:
            return self.category
        return category_span(self.egfr, self.comparator)


def assess(
    patient: PatientInfo,
    egfr: LabResult | None,
    creatinine: LabResult | None,
    conditions: list[ConditionFact],
    now: datetime,
    procedures: Iterable[ProcedureFact] = (),
) -> RenalStatus:
    """The renal status of a patient on `now` (see the module docstring for the order)."""
    procedures = list(procedures)
    max_age = timedelta(days=thresholds()["renal_result_max_age_days"])
    lab_status = _from_labs(patient, egfr, creatinine)
    lab = lab_status.lab if lab_status is not None else None

    dialysis, ended = _dialysis(conditions, procedures, now)
    if dialysis is not None:
        return _on_dialysis(dialysis, lab)

    coded = _most_severe_coded(conditions)
    if lab_status is not None and lab is not None:
        stale = now - lab.when > max_age
        newer_code = (
            coded is not None
            and coded[0].asserted is not None
            and coded[0].asserted > lab.when.date()
        )
        if coded is not None and (stale or newer_code):
            return RenalStatus(**{**_from_condition(coded, lab).__dict__, "superseded": lab})
        # Named on the card only when it is known to be older (a dated coded stage).
        older = coded[0] if coded is not None and coded[0].asserted is not None else ended
        return RenalStatus(**{**lab_status.__dict__, "stale": stale, "superseded": older})
    if coded is not None:
        return _from_condition(coded, None)
    if lab_status is not None:  # creatinine present but eGFR not computable
        return lab_status
    return RenalStatus(source="unknown", reason="no-renal-data")


def _dialysis(
    conditions: list[ConditionFact], procedures: list[ProcedureFact], now: datetime
) -> tuple[ConditionFact | ProcedureFact | None, ConditionFact | ProcedureFact | None]:
    """(the dialysis that makes the patient "on dialysis", or None; the one that ended)."""
    transplants: list[date | None] = [
        c.asserted for c in conditions if "kidney-transplant" in c.valuesets
    ] + [p.performed for p in procedures if "kidney-transplant-procedure" in p.valuesets]
    sessions = sorted(
        (p for p in procedures if "dialysis-procedure" in p.valuesets),
        key=lambda p: p.performed,
        reverse=True,
    )
    coded = [c for c in conditions if "dialysis" in c.valuesets]
    candidates: list[tuple[ConditionFact | ProcedureFact, date | None]] = [
        (c, c.asserted) for c in coded
    ]
    if sessions:
        candidates.insert(0, (sessions[0], sessions[0].performed))
    ended: ConditionFact | ProcedureFact | None = None
    for fact, when in candidates:
        session = fact in sessions
        # A transplant ends dialysis when dated after it; an undated transplant ends an
        # undated (or any coded) dialysis, never a dated session (a graft may have failed).
        after = any(
            (t is not None and when is not None and t >= when)
            or (not session and (t is None or when is None))
            for t in transplants
        )
        old = (
            session
            and when is not None
            and (now.date() - when).days > DIALYSIS_SESSION_MAX_AGE_DAYS
        )
        if after or old:
            ended = ended or fact
            continue
        return fact, None
    return None, ended


def _on_dialysis(fact: ConditionFact | ProcedureFact, lab: LabResult | None) -> RenalStatus:
    from cds_service.fhir.record import ConditionFact

    if isinstance(fact, ConditionFact):
        return RenalStatus(
            source="coded", category="G5D", date=fact.since, dialysis=True, condition=fact, lab=lab
        )
    return RenalStatus(
        source="coded", category="G5D", date=fact.performed, dialysis=True, procedure=fact, lab=lab
    )


def _from_labs(
    patient: PatientInfo, egfr: LabResult | None, creatinine: LabResult | None
) -> RenalStatus | None:
    if egfr is not None and (creatinine is None or creatinine.when.date() <= egfr.when.date()):
        return RenalStatus(
            source="measured",
            egfr=egfr.value,
            category=gfr_category(beyond(egfr.value, egfr.comparator)),
            date=egfr.when.date(),
            lab=egfr,
            comparator=egfr.comparator,
        )
    if creatinine is None:
        return None
    ages = patient.age_range_on(creatinine.when.date())
    missing = []
    if patient.sex not in ("female", "male"):
        missing.append("sex")
    if ages is None:
        missing.append("birth date")
    elif ages[1] < 18:
        missing.append("adult age")  # CKD-EPI 2021 is for adults
    elif ages[0] < 18:
        missing.append("exact birth date")
    if not missing and creatinine.value > 0 and ages is not None:
        sex = patient.sex or ""
        comparator = FLIPPED.get(creatinine.comparator or "")
        youngest, oldest = ages
        value = ckd_epi_2021(creatinine.value, oldest, sex)  # the lower eGFR of the range
        category = gfr_category(beyond(value, comparator))
        if youngest != oldest:
            other = ckd_epi_2021(creatinine.value, youngest, sex)
            if gfr_category(beyond(other, comparator)) != category:
                missing.append("exact birth date")
        if not missing:
            return RenalStatus(
                source="computed",
                egfr=value,
                category=category,
                date=creatinine.when.date(),
                lab=creatinine,
                age_at_test=oldest,
                sex=patient.sex,
                comparator=comparator,
                age_range=ages if youngest != oldest else None,
            )
    if egfr is not None:  # fall back on the older measured eGFR
        return _from_labs(patient, egfr, None)
    return RenalStatus(
        source="unknown", reason="egfr-not-computable", missing=tuple(missing), lab=None
    )


def _most_severe_coded(conditions: list[ConditionFact]) -> tuple[ConditionFact, str | None] | None:
    for valueset, category in CODED_STAGES:
        for condition in conditions:
            if valueset in condition.valuesets:
                return condition, category
    return None


def _from_condition(coded: tuple[ConditionFact, str | None], lab: LabResult | None) -> RenalStatus:
    condition, category = coded
    return RenalStatus(
        source="coded",
        category=category,
        date=condition.since,
        condition=condition,
        lab=lab,
    )
