"""Issue 14, point 4: warfarin in calciphylaxis or end-stage kidney disease (warfarin label 5.3:
warfarin can cause calciphylaxis, with or without end-stage renal disease) and warfarin with the
antibiotics the seeds use and with systemic NSAIDs (label 7.2 and 7.3): warnings, never
critical (a label warning, not a contraindication). cds_service/knowledge/safety.yaml
``warfarin-calciphylaxis`` and ``warfarin-interaction``; the ``nsaid`` value set."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES
from tests.helpers import (
    ATC,
    ICD10CM,
    SNOMED,
    TERMINOLOGY,
    condition,
    drug,
    egfr,
    medication,
    patient,
    record,
    variants,
)

WARFARIN = "11289"
IBUPROFEN = "5640"
CEPHALEXIN = "2231"
DICLOXACILLIN = "3356"
CEFTRIAXONE_2G = "1665046"  # ceftriaxone 2000 MG Injection (VSAC)
MINOCYCLINE = "6980"


def warfarin() -> dict[str, Any]:
    return drug(WARFARIN, rid="w")


def calciphylaxis() -> dict[str, Any]:
    return condition(ICD10CM, "", rid="cx", text="Calciphylaxis, both calves")


# ------------------------------------------------------------------ calciphylaxis, ESRD


def test_calciphylaxis_on_the_problem_list_is_a_warning() -> None:
    assert variants("warfarin-calciphylaxis", patient(), egfr(55), calciphylaxis(), warfarin()) == [
        "calciphylaxis"
    ]


@pytest.mark.parametrize(
    "renal",
    [
        [condition(ICD10CM, "Z99.2", rid="d")],  # dependence on dialysis
        [egfr(12)],  # current eGFR below 15
    ],
)
def test_end_stage_kidney_disease_is_a_warning(renal: list[dict[str, Any]]) -> None:
    assert variants("warfarin-calciphylaxis", patient(), *renal, warfarin()) == ["end-stage-renal"]


def test_calciphylaxis_leads_when_both_hold() -> None:
    found = variants(
        "warfarin-calciphylaxis",
        patient(),
        condition(ICD10CM, "Z99.2"),
        calciphylaxis(),
        warfarin(),
    )
    assert found == ["calciphylaxis"]


@pytest.mark.parametrize(
    "renal",
    [
        [egfr(24)],  # G4, not end-stage
        [condition(SNOMED, "431857002", rid="g4"), egfr(20)],  # CKD stage 4 coded
        [egfr(10, days_ago=500)],  # stale: not current data
    ],
)
def test_ckd_short_of_end_stage_or_stale_is_silent(renal: list[dict[str, Any]]) -> None:
    assert variants("warfarin-calciphylaxis", patient(), *renal, warfarin()) == []


def test_no_critical_row() -> None:
    for rule in ("warfarin-calciphylaxis", "warfarin-interaction"):
        assert all(row.label is None for row in load_table()[rule].rows), rule


# ------------------------------------------------------------------ interactions


@pytest.mark.parametrize(
    ("partner", "variant"),
    [
        (drug(IBUPROFEN, rid="x"), "nsaid"),
        (drug("M01AC06", rid="x", system=ATC), "nsaid"),  # meloxicam by ATC
        (drug(DICLOXACILLIN, rid="x"), "inr-lowered"),
        (drug(CEPHALEXIN, rid="x"), "cephalosporin"),
        (drug(CEFTRIAXONE_2G, rid="x"), "cephalosporin"),
    ],
)
def test_each_partner_gives_its_warning(partner: dict[str, Any], variant: str) -> None:
    assert variants("warfarin-interaction", patient(), egfr(80), warfarin(), partner) == [variant]


def test_one_finding_per_partner_about_the_same_warfarin_order() -> None:
    findings = RULES["warfarin-interaction"](
        record(patient(), egfr(80), warfarin(), drug(IBUPROFEN, rid="i"), drug(CEPHALEXIN, rid="c"))
    )
    assert sorted(f.variant for f in findings) == ["cephalosporin", "nsaid"]
    assert {f.facts["drug"].ref for f in findings} == {"MedicationRequest/w"}


@pytest.mark.parametrize(
    "text",
    ["Diclofenac sodium 1 % topical gel", "ibuprofen 5% cream", "kétoprofène 2,5 % gel"],
)
def test_a_topical_nsaid_is_not_a_partner(text: str) -> None:
    gel = medication(rid="g", medicationCodeableConcept={"text": text})
    assert variants("warfarin-interaction", patient(), egfr(80), warfarin(), gel) == []


def test_minocycline_stays_with_its_own_rule() -> None:
    assert variants("warfarin-interaction", patient(), warfarin(), drug(MINOCYCLINE, rid="m")) == []
    assert variants("warfarin-minocycline", patient(), warfarin(), drug(MINOCYCLINE, rid="m")) == [
        "interaction"
    ]


def test_aspirin_is_not_in_the_nsaid_value_set() -> None:
    concept = {"text": "Aspirin 81 mg tablet"}
    assert "nsaid" not in {m.valueset for m in TERMINOLOGY.match_medication(concept, None)}
