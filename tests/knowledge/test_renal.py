"""Renal status: CKD-EPI 2021, KDIGO categories, order of evidence, staleness."""

from __future__ import annotations

import math

import pytest

from cds_service.knowledge.renal import ckd_epi_2021, gfr_category
from fixtures.spec import ckd_epi_2021 as independent_ckd_epi
from tests.helpers import ICD10CM, SNOMED, condition, creatinine, egfr, patient, record


def test_ckd_epi_2021_hand_computed_value() -> None:
    # Woman, 50 y, Scr 1.0 mg/dL: 142 x (1.0/0.7)^-1.200 x 0.9938^50 x 1.012 = 68.6 (by hand).
    assert ckd_epi_2021(1.0, 50, "female") == pytest.approx(68.6, abs=0.1)
    # Man, 60 y, Scr 0.7 mg/dL (below kappa): 142 x (0.7/0.9)^-0.302 x 0.9938^60 = 105.0.
    assert ckd_epi_2021(0.7, 60, "male") == pytest.approx(142 * (0.7 / 0.9) ** -0.302 * 0.9938**60)


@pytest.mark.parametrize("scr", [0.4, 0.7, 0.9, 1.3, 2.5, 6.0])
@pytest.mark.parametrize("age", [25, 47, 80])
@pytest.mark.parametrize("sex", ["female", "male"])
def test_ckd_epi_2021_agrees_with_the_fixture_generator(scr: float, age: int, sex: str) -> None:
    assert ckd_epi_2021(scr, age, sex) == pytest.approx(
        independent_ckd_epi(scr, age, sex == "female")
    )


def test_ckd_epi_2021_refuses_what_it_cannot_compute() -> None:
    for args in [(1.0, 50, "unknown"), (0.0, 50, "male"), (1.0, 12, "female")]:
        with pytest.raises(ValueError, match="CKD-EPI 2021 needs"):
            ckd_epi_2021(*args)


@pytest.mark.parametrize(
    ("egfr_value", "category"),
    [
        (120, "G1"),
        (90, "G1"),
        (89.9, "G2"),
        (60, "G2"),
        (59.9, "G3a"),
        (45, "G3a"),
        (44.9, "G3b"),
        (30, "G3b"),
        (29.9, "G4"),
        (15, "G4"),
        (14.9, "G5"),
        (0, "G5"),
    ],
)
def test_kdigo_categories(egfr_value: float, category: str) -> None:
    assert gfr_category(egfr_value) == category


def test_measured_egfr_first() -> None:
    status = record(patient(), egfr(42, days_ago=3), creatinine(0.8, days_ago=3)).renal
    assert (status.source, status.egfr, status.category, status.stale) == (
        "measured",
        42,
        "G3b",
        False,
    )


def test_computed_from_creatinine_in_umol_with_age_at_test_date() -> None:
    # 190 umol/L = 2.149 mg/dL; woman aged 66 at the test date -> about 24.8.
    status = record(patient("female", "1960-06-15"), creatinine(190, "umol/L", days_ago=15)).renal
    assert status.source == "computed"
    assert status.age_at_test == 66
    assert status.egfr == pytest.approx(ckd_epi_2021(190 / 88.4, 66, "female"))
    assert math.floor(status.egfr) == 24
    assert status.category == "G4"


def test_newer_creatinine_beats_older_egfr() -> None:
    status = record(patient(), egfr(75, days_ago=400), creatinine(2.5, days_ago=2)).renal
    assert status.source == "computed"
    assert not status.stale


def test_creatinine_without_sex_falls_back_to_older_egfr_or_unknown() -> None:
    status = record(patient(gender=None), egfr(75, days_ago=30), creatinine(2.5, days_ago=2)).renal
    assert status.source == "measured"
    status = record(patient(gender=None), creatinine(2.5, days_ago=2)).renal
    assert status.source == "unknown"
    assert (status.reason, status.missing) == ("egfr-not-computable", ("sex",))


@pytest.mark.parametrize(
    ("code", "category"),
    [("431857002", "G4"), ("433146000", "G5"), ("46177005", "G5"), ("700379002", "G3")],
)
def test_coded_stage_when_no_labs(code: str, category: str) -> None:
    status = record(patient(), condition(SNOMED, code)).renal
    assert (status.source, status.category) == ("coded", category)


def test_stale_lab_with_coded_stage_uses_the_coded_stage() -> None:
    status = record(patient(), egfr(70, days_ago=800), condition(ICD10CM, "N18.4")).renal
    assert (status.source, status.category) == ("coded", "G4")


def test_stale_lab_alone_is_reported_stale() -> None:
    status = record(patient(), egfr(70, days_ago=366)).renal
    assert (status.source, status.stale) == ("measured", True)
    assert not record(patient(), egfr(70, days_ago=364)).renal.stale


def test_dialysis_overrides_the_laboratory_value() -> None:
    status = record(patient(), egfr(40, days_ago=2), condition(ICD10CM, "Z99.2")).renal
    assert (status.source, status.dialysis, status.category) == ("coded", True, "G5D")
    assert status.lab is not None  # the measurement stays visible as evidence


def test_resolved_ckd_condition_does_not_count() -> None:
    assert (
        record(patient(), condition(SNOMED, "431857002", clinical="resolved")).renal.source
        == "unknown"
    )


def test_nothing_known() -> None:
    status = record(patient()).renal
    assert (status.source, status.reason) == ("unknown", "no-renal-data")
    assert not status.known
