"""Unit normalisation: a lab value in whatever unit the EHR sent -> the canonical unit.

A unit that is not in the table is never guessed: `to_canonical` returns None and the caller
records that the value could not be interpreted. A result sent as text ("<15", "> 60 mL/min")
is read by `parse_text_value`, keeping its comparator.

Factors (shared/clinical/README.md, "Unit factors"): creatinine 1 mg/dL = 88.4 umol/L;
calcium 1 mmol/L = 4.008 mg/dL; phosphate 1 mmol/L = 3.097 mg/dL. From molar masses:
25-hydroxyvitamin D 1 ng/mL = 2.496 nmol/L (400.6 g/mol); PTH(1-84) 1 pmol/L = 9.43 pg/mL
(9425 g/mol). Mass units that differ only by scale (ng/L = pg/mL, ug/L = ng/mL) are equal.
Checked 2026-12-01 against the adult normal values of PMC7276095 Table 1 (PTH 1.6-6.9 pmol/L =
15-65 pg/mL, ratio 9.4; 25(OH)D 50-200 nmol/L = 20-80 ng/mL, ratio 2.5) and the 25-OH vitamin D
molar mass 400.65 g/mol (labtests.co.in unit converter). Calcium 1 mEq/L = 0.5 mmol/L (Ca2+ is
divalent). Creatinine mg/L (French and Swiss reports) = mg/dL / 10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CREATININE_UMOL_PER_MG_DL = 88.4
CALCIUM_MG_DL_PER_MMOL_L = 4.008
PHOSPHATE_MG_DL_PER_MMOL_L = 3.097
VITAMIN_D_NMOL_L_PER_NG_ML = 2.496
PTH_PG_ML_PER_PMOL_L = 9.43


@dataclass(frozen=True)
class CanonicalUnit:
    label: str  # how the unit is written in cards
    factors: dict[str, float]  # normalised unit spelling -> multiplier to the canonical unit
    decimals: int = 1  # how many decimals a card shows


_CALCIUM = {
    "mg/dl": 1.0,
    "mmol/l": CALCIUM_MG_DL_PER_MMOL_L,
    "mg/l": 0.1,
    "meq/l": CALCIUM_MG_DL_PER_MMOL_L / 2,  # Ca2+ is divalent: 1 mEq/L = 0.5 mmol/L
}

CANONICAL: dict[str, CanonicalUnit] = {
    "creatinine": CanonicalUnit(
        "mg/dL",
        {
            "mg/dl": 1.0,
            "umol/l": 1 / CREATININE_UMOL_PER_MG_DL,
            "micromol/l": 1 / CREATININE_UMOL_PER_MG_DL,
            "mmol/l": 1000 / CREATININE_UMOL_PER_MG_DL,
            "mg/l": 0.1,  # French and Swiss laboratories
        },
        decimals=2,
    ),
    "egfr": CanonicalUnit(
        "mL/min/1.73 m²",
        {
            "ml/min/1.73m2": 1.0,
            "ml/min/1.73sqm": 1.0,
            "ml/min/1.73sq.m": 1.0,
            "ml/min/1.73msq": 1.0,
            "ml/mn/1.73m2": 1.0,  # French reports write minutes "mn"
            "ml/minper1.73m2": 1.0,
            "ml/min/1.73m.2": 1.0,
        },
        decimals=0,
    ),
    "calcium": CanonicalUnit("mg/dL", _CALCIUM),
    # Ionised calcium is read in mmol/L (the unit it is usually reported in).
    "calcium-ionised": CanonicalUnit(
        "mmol/L", {"mmol/l": 1.0, "mg/dl": 1 / CALCIUM_MG_DL_PER_MMOL_L}, decimals=2
    ),
    "phosphate": CanonicalUnit(
        "mg/dL", {"mg/dl": 1.0, "mmol/l": PHOSPHATE_MG_DL_PER_MMOL_L, "mg/l": 0.1}
    ),
    "pth": CanonicalUnit(
        "pg/mL", {"pg/ml": 1.0, "ng/l": 1.0, "pmol/l": PTH_PG_ML_PER_PMOL_L}, decimals=0
    ),
    "vitamin-d": CanonicalUnit(
        "ng/mL",
        {"ng/ml": 1.0, "ug/l": 1.0, "nmol/l": 1 / VITAMIN_D_NMOL_L_PER_NG_ML},
        decimals=0,
    ),
    "systolic-bp": CanonicalUnit("mm Hg", {"mm[hg]": 1.0, "mmhg": 1.0}, decimals=0),
    "lesion-size": CanonicalUnit("mm", {"mm": 1.0, "cm": 10.0}),
    # Albumin in g/L (1 g/dL = 10 g/L), read to correct a total calcium (calcinosis_type.py).
    "albumin": CanonicalUnit("g/L", {"g/l": 1.0, "g/dl": 10.0}, decimals=0),
    # Sodium and bicarbonate (total CO2) in mmol/L, read before IV sodium thiosulfate: both ions
    # are monovalent, so 1 mEq/L = 1 mmol/L.
    "sodium": CanonicalUnit("mmol/L", {"mmol/l": 1.0, "meq/l": 1.0}, decimals=0),
    "bicarbonate": CanonicalUnit("mmol/L", {"mmol/l": 1.0, "meq/l": 1.0}, decimals=0),
}


def normalise_unit(unit: str) -> str:
    """Fold the spellings EHRs use: "µmol/L", "umol/l", "mL/min/{1.73_m2}", "ml/min/1,73 m²"."""
    u = unit.strip().lower()
    u = u.replace("µ", "u").replace("μ", "u").replace("²", "2").replace(",", ".")
    return re.sub(r"[\s{}_^*]", "", u)


def is_quantitative(concept: str) -> bool:
    return concept in CANONICAL


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


def decimals(concept: str) -> int:
    return CANONICAL[concept].decimals


# --------------------------------------------------------------------------- text values

# A comparator as FHIR Quantity.comparator codes it, from the spellings reports use.
_COMPARATORS = {
    "<": "<",
    "<=": "<=",
    "=<": "<=",
    "≤": "<=",
    ">": ">",
    ">=": ">=",
    "=>": ">=",
    "≥": ">=",
    "less than": "<",
    "greater than": ">",
    "more than": ">",
    "above": ">",
    "below": "<",
    "inferieur a": "<",
    "inférieur à": "<",
    "superieur a": ">",
    "supérieur à": ">",
    "plus de": ">",
    "moins de": "<",
}
COMPARATORS = frozenset({"<", "<=", ">", ">="})
_VALUE = re.compile(
    r"^\s*(?P<cmp>"
    + "|".join(re.escape(c) for c in sorted(_COMPARATORS, key=len, reverse=True))
    + r")?\s*(?P<num>[0-9]+(?:[.,][0-9]+)?)\s*(?P<unit>[a-zµμ%{\[].*?)?\s*$",
    re.IGNORECASE,
)


def parse_text_value(text: str) -> tuple[str | None, float, str | None] | None:
    """A result written as text ("<15", "> 60 mL/min/1.73m2", ">=90", "inférieur à 15"):
    (comparator or None, number, unit or None); None when the text is not one number."""
    match = _VALUE.match(text)
    if match is None:
        return None
    cmp = match.group("cmp")
    comparator = _COMPARATORS[cmp.lower()] if cmp else None
    value = float(match.group("num").replace(",", "."))
    unit = match.group("unit")
    return comparator, value, unit.strip() if unit else None
