"""Issue 14, point 3: ceftriaxone binds calcium (seed 002 proposes 2 g/day IV for 20 days for
calcinosis). The US ceftriaxone label forbids infusing it with intravenous calcium at the same
time or through the same line (contraindicated in neonates only): ``ceftriaxone-calcium``, a
warning on a parenteral calcium gluconate / chloride order (``route: parenteral``). Its
Precautions describe ceftriaxone-calcium precipitates in the gallbladder and the urinary tract:
``ceftriaxone-precipitates``, a warning with kidney stones (first row) or calcinosis."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES
from tests.helpers import (
    ATC,
    ICD10CM,
    RXNORM,
    SNOMED,
    condition,
    drug,
    egfr,
    medication,
    patient,
    record,
    variants,
)

CEFTRIAXONE_2G = "1665046"
CALCIUM_GLUCONATE_ORAL = "198546"  # Calcium Gluconate 500 MG Oral Tablet
CALCINOSIS = ("L94.2", ICD10CM)
KIDNEY_STONE = ("95570007", SNOMED)


def ceftriaxone() -> dict[str, Any]:
    return drug(CEFTRIAXONE_2G, rid="cro")


def iv_calcium(text: str = "Calcium gluconate 10 % injection", **extra: Any) -> dict[str, Any]:
    return medication(rid="ca", medicationCodeableConcept={"text": text}, **extra)


# ------------------------------------------------------------------ with intravenous calcium


@pytest.mark.parametrize(
    "calcium",
    [
        iv_calcium(),
        iv_calcium("CALCIUM CHLORIDE 100 MG/ML (10 %) IV SOLN"),
        iv_calcium("chlorure de calcium 10 %, solution injectable"),
        medication(
            rid="ca",
            medicationCodeableConcept={"coding": [{"system": ATC, "code": "B05XA19"}]},
            dosageInstruction=[{"text": "1 g intravenously over 10 minutes"}],
        ),
    ],
)
def test_parenteral_calcium_with_ceftriaxone_is_a_warning(calcium: dict[str, Any]) -> None:
    assert variants("ceftriaxone-calcium", patient(), ceftriaxone(), calcium) == ["precipitation"]


def test_the_card_is_about_the_order_under_review() -> None:
    (finding,) = RULES["ceftriaxone-calcium"](record(patient(), ceftriaxone(), iv_calcium()))
    assert finding.facts["drug"].ref == "MedicationRequest/ca"
    assert finding.facts["other"].ref == "MedicationRequest/cro"


@pytest.mark.parametrize(
    "calcium",
    [
        drug(CALCIUM_GLUCONATE_ORAL, rid="ca"),  # oral calcium gluconate: not parenteral
        medication(rid="ca", medicationCodeableConcept={"text": "Calcium gluconate 500 mg tablet"}),
        drug("1897", rid="ca"),  # calcium carbonate
    ],
)
def test_oral_calcium_is_silent(calcium: dict[str, Any]) -> None:
    assert variants("ceftriaxone-calcium", patient(), ceftriaxone(), calcium) == []


def test_iv_calcium_alone_is_silent() -> None:
    assert variants("ceftriaxone-calcium", patient(), iv_calcium()) == []


def test_a_warning_not_a_contraindication_outside_neonates() -> None:
    assert all(row.label is None for row in load_table()["ceftriaxone-calcium"].rows)


# ------------------------------------------------------- biliary and urinary precipitates


def test_kidney_stones_lead() -> None:
    found = variants(
        "ceftriaxone-precipitates",
        patient(),
        egfr(90),
        condition(CALCINOSIS[1], CALCINOSIS[0], rid="c"),
        condition(KIDNEY_STONE[1], KIDNEY_STONE[0], rid="k"),
        ceftriaxone(),
    )
    assert found == ["nephrolithiasis"]


def test_calcinosis_is_a_warning() -> None:
    found = variants(
        "ceftriaxone-precipitates",
        patient(),
        egfr(90),
        condition(CALCINOSIS[1], CALCINOSIS[0], rid="c"),
        ceftriaxone(),
    )
    assert found == ["calcinosis"]


def test_no_calcinosis_no_stones_is_silent() -> None:
    assert variants("ceftriaxone-precipitates", patient(), egfr(90), ceftriaxone()) == []
    resolved = condition(KIDNEY_STONE[1], KIDNEY_STONE[0], rid="k", clinical="resolved")
    assert variants("ceftriaxone-precipitates", patient(), resolved, ceftriaxone()) == []


def test_ceftriaxone_value_set_reads_products_and_names() -> None:
    from tests.helpers import TERMINOLOGY

    for concept in (
        {"coding": [{"system": RXNORM, "code": "1665021"}]},
        {"text": "ROCEPHINE 1 g/3,5 ml, poudre et solvant pour solution injectable (IM)"},
        {"coding": [{"system": ATC, "code": "J01DD04"}]},
    ):
        assert "ceftriaxone" in {m.valueset for m in TERMINOLOGY.match_medication(concept, None)}
