"""Prefetch-complete patient-view requests of three sizes, built with the fixtures' generator.

One synthetic patient, three record lengths: a 64-year-old woman with systemic sclerosis,
Raynaud's phenomenon, interstitial lung disease, reflux and calcinosis cutis (painful, at times
inflamed nodules, a 9 mm lesion measured recently) whose renal function declines over the
years (serum creatinine rising from about 0.85 to 2.1 mg/dL, eGFR computed from it with the
CKD-EPI 2021 equation, from about 75 down to the mid-twenties), with phosphate and PTH drifting
above their reference ranges. She takes aluminium hydroxide and colchicine for the calcinosis,
diltiazem for Raynaud's phenomenon and cholecalciferol; older orders (alendronate, probenecid,
minocycline, calcium carbonate) are stopped or completed. The service answers with real cards
(the aluminium renal alert, colchicine against renal function and with diltiazem, the
calcinosis context, type and lesion cards, the supplement review).

Each laboratory visit draws creatinine with its eGFR, calcium, phosphate, potassium, systolic
blood pressure and heart rate; PTH every second visit and 25-OH vitamin D every fourth. The
three sizes differ by how many years of visits the record holds; the fixtures' filler
observations (heart rate, potassium, blood pressure) top each record up to its exact size.
Nothing here changes the committed fixtures: only the generator's building blocks are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from fixtures.codes import (
    ALENDRONATE,
    ANTI_CENTROMERE,
    CALCIUM,
    CALCIUM_CARBONATE,
    CHOLECALCIFEROL,
    CKD3A_ICD,
    COLCHICINE,
    CREATININE_MASS,
    DIGITAL_ULCER_TEXT,
    DILTIAZEM,
    EGFR_CKD_EPI_2021,
    GERD_SNOMED,
    HEART_RATE,
    ILD_SNOMED,
    LESION_WIDTH,
    MINOCYCLINE,
    NEVER_SMOKER,
    OSTEOPOROSIS_SNOMED,
    PHOSPHATE,
    POTASSIUM,
    PROBENECID,
    PTH_INTACT,
    RAYNAUD_SNOMED,
    SKIN_ULCER_SNOMED,
    SYSTOLIC_BP,
    VITAMIN_D3,
)
from fixtures.generator import build_request
from fixtures.resources import stable_rng
from fixtures.spec import (
    ConditionSpec,
    ObservationSpec,
    PatientSpec,
    aluminium,
    antibody,
    calcinosis,
    ckd_epi_2021,
    lesion_size,
    prescribed,
    ranged,
    smoking_status,
    ssc,
)

AGE = 64
FEMALE = True
#: Days before as_of of the most recent visit.
LATEST_VISIT_DAYS = 12
#: Length of the renal course (the large record covers all of it).
COURSE_YEARS = 10


@dataclass(frozen=True)
class Size:
    """A record size: how many resources in all, over how many years of visits."""

    name: str
    resources: int
    years: int
    max_visits: int  # at most one laboratory visit a month


SIZES: tuple[Size, ...] = (
    Size("small", 50, 1, 12),
    Size("typical", 300, 6, 72),
    Size("large", 2000, 10, 120),
)

CONDITIONS: tuple[ConditionSpec, ...] = (
    ssc(onset_days=4200),
    calcinosis(
        onset_days=1400,
        note="Painful calcinotic nodules on both index fingers, intermittently inflamed",
    ),
    ConditionSpec(RAYNAUD_SNOMED, 5200),
    ConditionSpec(GERD_SNOMED, 3100),
    ConditionSpec(ILD_SNOMED, 2600),
    ConditionSpec(OSTEOPOROSIS_SNOMED, 2000),
    ConditionSpec(CKD3A_ICD, 900),
    ConditionSpec(
        SKIN_ULCER_SNOMED, 420, clinical="resolved", abatement_days=300, text=DIGITAL_ULCER_TEXT
    ),
)

MEDICATIONS = (
    aluminium(authored_days=700),
    prescribed(COLCHICINE, authored_days=200),
    prescribed(DILTIAZEM, authored_days=1500),
    prescribed(CHOLECALCIFEROL, authored_days=500),
    prescribed(ALENDRONATE, authored_days=1800, status="stopped"),
    prescribed(PROBENECID, authored_days=1200, status="completed"),
    prescribed(MINOCYCLINE, authored_days=900, status="stopped"),
    prescribed(CALCIUM_CARBONATE, authored_days=1600, status="stopped"),
)

#: Observations outside the visits: lesion size (focus: the calcinosis, 2nd condition),
#: smoking status, anti-centromere antibody.
EXTRA_OBSERVATIONS: tuple[ObservationSpec, ...] = (
    lesion_size(9, 45, focus=2),
    lesion_size(6, 45, focus=2, analyte=LESION_WIDTH),
    smoking_status(NEVER_SMOKER, 200),
    antibody(ANTI_CENTROMERE, True, 3000),
)

#: Observations of visit number ``i`` (0-based): 7, plus PTH every 2nd, vitamin D every 4th.
VISIT_BASE = 7


def _per_visit(i: int) -> int:
    return VISIT_BASE + (i % 2 == 0) + (i % 4 == 0)


def _visit(i: int, days: int, progress: float, seed: str) -> list[ObservationSpec]:
    """One laboratory visit, ``progress`` from 0 (first visit) to 1 (latest)."""
    rng = stable_rng(f"{seed}:{i}")

    def noise(spread: float) -> float:
        return (rng.random() * 2 - 1) * spread

    time = f"{8 + int(rng.random() * 3):02d}:{int(rng.random() * 4) * 15:02d}"
    creatinine = round(0.85 + 1.25 * progress**1.3 + noise(0.04), 2)
    age = AGE - int(days / 365.25)
    egfr_value = round(ckd_epi_2021(creatinine, age, FEMALE))
    phosphate = round(3.3 + 1.5 * progress + noise(0.2), 1)
    visit = [
        ObservationSpec(CREATININE_MASS, creatinine, days, time=time),
        ObservationSpec(EGFR_CKD_EPI_2021, egfr_value, days, time=time),
        ranged(CALCIUM, round(9.3 + noise(0.3), 1), days, time),
        ranged(PHOSPHATE, phosphate, days, time),
        ObservationSpec(POTASSIUM, round(4.0 + 0.7 * progress + noise(0.2), 1), days, time=time),
        ObservationSpec(SYSTOLIC_BP, round(126 + noise(12)), days, time=time),
        ObservationSpec(HEART_RATE, round(74 + noise(12)), days, time=time),
    ]
    if i % 2 == 0:
        visit.append(ranged(PTH_INTACT, round(40 + 90 * progress**1.5 + noise(5)), days, time))
    if i % 4 == 0:
        visit.append(ObservationSpec(VITAMIN_D3, round(55 + noise(12)), days, time=time))
    return visit


def visits(count: int, years: int, seed: str) -> list[ObservationSpec]:
    """``count`` visits spread evenly over ``years`` (the latest LATEST_VISIT_DAYS ago). The
    disease follows one ten-year course whatever the size: a shorter record is its end."""
    span = years * 365 - LATEST_VISIT_DAYS
    course = COURSE_YEARS * 365 - LATEST_VISIT_DAYS
    observations: list[ObservationSpec] = []
    for i in range(count):
        step = 1.0 if count == 1 else i / (count - 1)
        days = LATEST_VISIT_DAYS + round(span * (1 - step))
        progress = 1 - (days - LATEST_VISIT_DAYS) / course
        observations += _visit(i, days, progress, seed)
    return observations


def spec(size: Size) -> PatientSpec:
    """The patient spec of one size: as many visits as fit, filler for the rest."""
    fixed = 1 + len(CONDITIONS) + len(MEDICATIONS) + len(EXTRA_OBSERVATIONS)
    count, used = 0, fixed
    while count < size.max_visits and used + _per_visit(count) <= size.resources:
        used += _per_visit(count)
        count += 1
    number = 90 + [s.name for s in SIZES].index(size.name)
    return PatientSpec(
        number,
        f"bench-{size.name}",
        f"Benchmark patient, {size.name} record ({size.resources} resources).",
        "female",
        AGE,
        "Bench-Durand",
        ("Claire",),
        conditions=CONDITIONS,
        observations=(*visits(count, size.years, size.name), *EXTRA_OBSERVATIONS),
        medications=MEDICATIONS,
        noise=size.resources - used,
        noise_max_days=size.years * 365,
    )


def build(size: Size, as_of: date) -> dict[str, Any]:
    """The patient-view request of one size, its dates anchored at ``as_of``."""
    return build_request(spec(size), as_of)


def resource_count(request: dict[str, Any]) -> int:
    """Resources in a request's prefetch (a resource or the entries of a Bundle per key)."""
    count = 0
    for value in request["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            count += len(value.get("entry", []))
        elif value is not None:
            count += 1
    return count


def body(request: dict[str, Any]) -> bytes:
    """The request as an EHR sends it: compact UTF-8 JSON."""
    return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
