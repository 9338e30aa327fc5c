"""Issue 14, point 7: the screening and precautions the labels ask for before the
immunotherapies the seeds propose for calcinosis, as warnings of the safety table.

- ``rituximab-hbv-screening``: rituximab with no readable HBsAg or no readable anti-HBc within
  365 days (Rituxan boxed warning and 5.3: screen every patient with both before treatment).
- ``infliximab-screening``: infliximab with no latent-tuberculosis test (IGRA or tuberculin skin
  test) and / or no hepatitis B serology within 365 days (Remicade boxed warning, 5.1, 5.3).
- ``ivig-renal-thrombosis``: intravenous immunoglobulin with a current eGFR below 60 and / or an
  active thrombotic risk on the problem list, and the stale / unknown renal rows (the immune
  globulin class boxed warning).

Any result of a screening test counts, positive or negative: the check is that the test was
done; a positive result is the clinician's to act on."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cds_service.hooks.services import SERVICES_FILE, _flatten
from cds_service.knowledge.safety import load_table
from cds_service.rules.treatment_safety import reads
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import (
    ATC,
    ICD10CM,
    RXNORM,
    antibody,
    condition,
    drug,
    egfr,
    medication,
    observation,
    patient,
    variants,
)

RULES = ("rituximab-hbv-screening", "infliximab-screening", "ivig-renal-thrombosis")
HBSAG, ANTI_HBC, IGRA, TST = "5196-1", "16933-4", "71773-6", "1648-5"


def rituximab(code: str = "121191", system: str = RXNORM) -> dict[str, Any]:
    return drug(code, rid="rtx", system=system)


def infliximab(code: str = "191831") -> dict[str, Any]:
    return drug(code, rid="ifx")


def ivig() -> dict[str, Any]:
    return drug("J06BA02", rid="ivig", system=ATC)


def hbv(days_ago: float = 30, text: str = "Negative") -> list[dict[str, Any]]:
    return [
        antibody(HBSAG, text, days_ago, rid="hbsag"),
        antibody(ANTI_HBC, text, days_ago, rid="hbc"),
    ]


# ------------------------------------------------------------------------- rituximab


def test_rituximab_without_hepatitis_b_serology_is_a_warning() -> None:
    assert variants(RULES[0], patient(), rituximab()) == ["no-hbv-serology"]


@pytest.mark.parametrize(
    "code",
    ["1657862", "2105834", "1927893", "2105831"],  # SCD, biosimilar SCD, SC form, SBD
)
def test_rituximab_products_and_biosimilars_are_checked(code: str) -> None:
    assert variants(RULES[0], patient(), rituximab(code)) == ["no-hbv-serology"]


def test_a_free_text_rituximab_order_is_checked() -> None:
    order = medication(rid="rtx", medicationCodeableConcept={"text": "Truxima 500 mg IV"})
    assert variants(RULES[0], patient(), order) == ["no-hbv-serology"]


def test_both_tests_are_needed() -> None:
    hbsag_only = antibody(HBSAG, "Negative", 20, rid="hbsag")
    anti_hbc_only = antibody(ANTI_HBC, "Negative", 20, rid="hbc")
    assert variants(RULES[0], patient(), rituximab(), hbsag_only) == ["no-hbv-serology"]
    assert variants(RULES[0], patient(), rituximab(), anti_hbc_only) == ["no-hbv-serology"]


@pytest.mark.parametrize("text", ["Negative", "Positive", "non réactif"])
def test_any_recent_result_of_both_is_silent(text: str) -> None:
    # A positive result is known to the clinician: the label's screening was done.
    assert variants(RULES[0], patient(), rituximab(), *hbv(60, text)) == []


def test_a_serology_older_than_a_year_does_not_count() -> None:
    assert variants(RULES[0], patient(), rituximab(), *hbv(400)) == ["no-hbv-serology"]


def test_no_rituximab_no_finding() -> None:
    assert variants(RULES[0], patient()) == []


# ------------------------------------------------------------------------ infliximab


def test_infliximab_without_any_screening_names_both() -> None:
    assert variants(RULES[1], patient(), infliximab()) == ["no-tb-no-hbv"]


def test_infliximab_without_a_tuberculosis_test() -> None:
    assert variants(RULES[1], patient(), infliximab(), *hbv()) == ["no-tb-screening"]


def test_infliximab_without_hepatitis_b_serology() -> None:
    igra = antibody(IGRA, "Negative", 30, rid="igra")
    assert variants(RULES[1], patient(), infliximab(), igra) == ["no-hbv-serology"]


def test_a_tuberculin_skin_test_in_mm_counts_as_a_tuberculosis_test() -> None:
    tst = observation(TST, 3, "mm", 40, rid="tst")
    assert variants(RULES[1], patient(), infliximab(), tst, *hbv()) == []


@pytest.mark.parametrize("code", ["310994", "1790541", "1927285"])
def test_infliximab_products_and_biosimilars_are_checked(code: str) -> None:
    assert variants(RULES[1], patient(), infliximab(code)) == ["no-tb-no-hbv"]


def test_an_old_tuberculosis_test_does_not_count() -> None:
    igra = antibody(IGRA, "Negative", 800, rid="igra")
    assert variants(RULES[1], patient(), infliximab(), igra, *hbv()) == ["no-tb-screening"]


def test_a_screened_infliximab_patient_is_silent() -> None:
    igra = antibody(IGRA, "Negative", 30, rid="igra")
    assert variants(RULES[1], patient(), infliximab(), igra, *hbv()) == []


# ----------------------------------------------------------------------------- IVIG


def test_ivig_with_an_egfr_below_60_is_a_renal_warning() -> None:
    assert variants(RULES[2], patient(), ivig(), egfr(59)) == ["renal"]
    assert variants(RULES[2], patient(), ivig(), egfr(60)) == []


def test_ivig_with_a_thrombotic_risk_is_a_thrombosis_warning() -> None:
    dvt = condition(ICD10CM, "I82.409", rid="dvt")
    aps = condition(ICD10CM, "D68.61", rid="aps")
    assert variants(RULES[2], patient(), ivig(), egfr(85), dvt) == ["thrombosis"]
    assert variants(RULES[2], patient(), ivig(), egfr(85), aps) == ["thrombosis"]


def test_a_resolved_thrombosis_is_not_read() -> None:
    dvt = condition(ICD10CM, "I82.409", rid="dvt", clinical="resolved")
    assert variants(RULES[2], patient(), ivig(), egfr(85), dvt) == []


def test_both_make_one_finding_led_by_renal_function() -> None:
    aps = condition(ICD10CM, "D68.61", rid="aps")
    assert variants(RULES[2], patient(), ivig(), egfr(45), aps) == ["renal-and-thrombosis"]


def test_ivig_stale_and_unknown_renal_function() -> None:
    assert variants(RULES[2], patient(), ivig(), egfr(85, days_ago=400)) == ["stale"]
    assert variants(RULES[2], patient(), ivig()) == ["unknown"]


def test_ivig_by_name_french_and_brand() -> None:
    for text in ("Immunoglobulines humaines normales intraveineuses 10 %", "Privigen 40 g IV"):
        order = medication(rid="ivig", medicationCodeableConcept={"text": text})
        assert variants(RULES[2], patient(), order, egfr(45)) == ["renal"], text


def test_ivig_with_a_normal_egfr_and_no_risk_is_silent() -> None:
    assert variants(RULES[2], patient(), ivig(), egfr(95)) == []


# ------------------------------------------------------------------------- wiring


def test_warnings_only_and_every_card_variant_exists() -> None:
    table = load_table()
    for rule_id in RULES:
        card = yaml.safe_load((DEFAULT_CARDS_DIR / f"{rule_id}.yaml").read_text(encoding="utf-8"))
        for row in table[rule_id].rows:
            assert row.label is None, rule_id  # no label contraindication: no critical row
            assert card["variants"][row.variant]["indicator"] == "warning", (rule_id, row.variant)


def test_every_service_runs_the_rules_and_prefetches_the_screening_tests() -> None:
    for service in yaml.safe_load(SERVICES_FILE.read_text(encoding="utf-8")):
        names = _flatten(service["rules"])
        for rule_id in RULES:
            assert rule_id in names, service["id"]
        observed = service["prefetch"]["observations"]["valuesets"]
        for concept in ("hbsag", "anti-hbc", "tuberculosis-infection-test"):
            assert concept in observed, service["id"]
    table = load_table()
    assert {"hbsag", "anti-hbc"} <= set(reads(table[RULES[0]]).observations)
    assert "tuberculosis-infection-test" in reads(table[RULES[1]]).observations
    assert "thrombotic-risk" in reads(table[RULES[2]]).conditions
