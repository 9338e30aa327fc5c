"""Unit normalisation: a lab value in whatever unit the EHR sent -> the canonical unit.

A unit that is not in the table is never guessed: `to_canonical` returns None and the caller
records that the value could not be interpreted.

Factors: creatinine 1 mg/dL = 88.4 umol/L (shared/clinical/README.md, "Unit factors").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CREATININE_UMOL_PER_MG_DL = 88.4


@dataclass(frozen=True)
class CanonicalUnit:
    label: str  # how the unit is written in cards
    factors: dict[str, float]  # normalised unit spelling -> multiplier to the canonical unit


CANONICAL: dict[str, CanonicalUnit] = {
    "creatinine": CanonicalUnit(
        "mg/dL",
        {
            "mg/dl": 1.0,
            "umol/l": 1 / CREATININE_UMOL_PER_MG_DL,
            "micromol/l": 1 / CREATININE_UMOL_PER_MG_DL,
            "mmol/l": 1000 / CREATININE_UMOL_PER_MG_DL,
        },
    ),
    "egfr": CanonicalUnit(
        "mL/min/1.73 m²",
        {
            "ml/min/1.73m2": 1.0,
            "ml/min/1.73sqm": 1.0,
            "ml/min/1.73sq.m": 1.0,
            "ml/min/1.73msq": 1.0,
        },
    ),
}


def normalise_unit(unit: str) -> str:
    """Fold the spellings EHRs use: "µmol/L", "umol/l", "mL/min/{1.73_m2}", "ml/min/1,73 m²"."""
    u = unit.strip().lower()
    u = u.replace("µ", "u").replace("μ", "u").replace("²", "2").replace(",", ".")
    return re.sub(r"[\s{}_^*]", "", u)


def to_canonical(concept: str, value: float, units: list[str]) -> float | None:
    """`value` converted to the canonical unit of `concept`, trying each spelling in `units`
    (UCUM code first, then the human unit); None when no spelling is recognised."""
    canonical = CANONICAL.get(concept)
    if canonical is None:
        return None
    for unit in units:
        factor = canonical.factors.get(normalise_unit(unit))
        if factor is not None:
            return value * factor
    return None


def canonical_label(concept: str) -> str:
    return CANONICAL[concept].label
