"""Issue 14, point 8: diltiazem and verapamil with what slows the heart, and with the statins
whose dose their labels cap (cds_service/knowledge/safety.yaml ``ccb-sick-sinus``,
``ccb-rate-slowing``, ``ccb-statin-ceiling``).

- Sick sinus syndrome on the problem list: critical (diltiazem and verapamil labels,
  Contraindications, except with a functioning ventricular pacemaker, which the service cannot
  see); a resolved one is not current data.
- Ivabradine: critical (Procoralan EU SmPC 4.3 contraindicates its combination with verapamil or
  diltiazem); a systemic beta-blocker or digoxin: a warning (additive slowing of rate and AV
  conduction); eye-drop beta-blockers are local forms and are not read.
- Simvastatin or lovastatin: a warning stating the label's ceiling (10 and 20 mg a day), since
  the service does not read doses; other statins are silent.
- Verapamil with a coded heart failure: a warning (``verapamil-heart-failure``); the label's
  contraindication, severe left ventricular dysfunction, is not what the codes express."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service import rules
from cds_service.hooks.services import load_services
from cds_service.knowledge.safety import load_table
from tests import helpers as h
from tests.helpers import ATC, ICD10CM, SNOMED, condition, drug, egfr, medication, patient, variants

DILTIAZEM, VERAPAMIL = "3443", "11170"
METOPROLOL, DIGOXIN = "6918", "3407"
SIMVASTATIN, LOVASTATIN, PRAVASTATIN = "36567", "6472", "42463"
IVABRADINE_TABLET = "1649485"  # ivabradine 5 MG Oral Tablet
SICK_SINUS_SNOMED, SICK_SINUS_ICD = "36083008", "I49.5"


def ccb(code: str = DILTIAZEM) -> dict[str, Any]:
    return drug(code, rid="ccb")


def named(text: str, rid: str = "other") -> dict[str, Any]:
    return medication("active", rid, medicationCodeableConcept={"text": text})


def base(*resources: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    return (patient(), egfr(80), *resources)


# ------------------------------------------------------------------ sick sinus syndrome


@pytest.mark.parametrize(
    ("system", "code", "drug_code"),
    [
        (SNOMED, SICK_SINUS_SNOMED, DILTIAZEM),
        (ICD10CM, SICK_SINUS_ICD, VERAPAMIL),
    ],
)
def test_sick_sinus_syndrome_contraindicates_diltiazem_and_verapamil(
    system: str, code: str, drug_code: str
) -> None:
    sss = condition(system, code)
    assert variants("ccb-sick-sinus", *base(sss, ccb(drug_code))) == ["contraindicated"]


def test_sick_sinus_syndrome_by_its_french_name() -> None:
    sss = condition(SNOMED, "", text="Maladie du sinus, bradycardie-tachycardie")
    assert variants("ccb-sick-sinus", *base(sss, ccb())) == ["contraindicated"]


@pytest.mark.parametrize(
    "resources",
    [
        (condition(SNOMED, SICK_SINUS_SNOMED, clinical="resolved"), ccb()),
        (condition(SNOMED, "49710005"), ccb()),  # sinus bradycardia: not the contraindication
        (condition(SNOMED, SICK_SINUS_SNOMED),),  # no calcium-channel blocker
    ],
)
def test_resolved_other_rhythm_or_no_drug_is_silent(resources: tuple[dict[str, Any], ...]) -> None:
    assert variants("ccb-sick-sinus", *base(*resources)) == []


def test_the_critical_rows_carry_their_label() -> None:
    table = load_table()
    sick_sinus = [r for r in table["ccb-sick-sinus"].rows if r.variant == "contraindicated"]
    assert sick_sinus
    assert all("98a3ef97" in r.label and "1042fa13" in r.label for r in sick_sinus)
    (ivabradine,) = [r for r in table["ccb-rate-slowing"].rows if r.variant == "ivabradine"]
    assert "Procoralan" in ivabradine.label
    assert "4.3" in ivabradine.label


# ------------------------------------------------------------------ heart-rate-lowering partners


@pytest.mark.parametrize(
    ("partner", "expected"),
    [
        (drug(IVABRADINE_TABLET, rid="other"), ["ivabradine"]),
        (drug("C01EB17", rid="other", system=ATC), ["ivabradine"]),
        (named("Procoralan 5 mg, comprimé pelliculé"), ["ivabradine"]),
        (drug(METOPROLOL, rid="other"), ["beta-blocker"]),
        (named("Bisoprolol 5 mg tablet, once a day"), ["beta-blocker"]),
        (drug(DIGOXIN, rid="other"), ["digoxin"]),
        (named("Hémigoxine 0,125 mg, comprimé"), ["digoxin"]),
    ],
)
def test_ivabradine_is_critical_beta_blockers_and_digoxin_are_warnings(
    partner: dict[str, Any], expected: list[str]
) -> None:
    assert variants("ccb-rate-slowing", *base(ccb(), partner)) == expected
    assert variants("ccb-rate-slowing", *base(ccb(VERAPAMIL), partner)) == expected


def test_eye_drop_beta_blockers_are_not_read() -> None:
    drops = named("Timolol 0.5% ophthalmic solution, one drop each eye twice a day")
    assert variants("ccb-rate-slowing", *base(ccb(), drops)) == []
    assert variants("ccb-rate-slowing", *base(ccb(), named("Timoptol collyre 0,5 %"))) == []


def test_a_stopped_partner_or_a_dihydropyridine_is_silent() -> None:
    stopped = drug(METOPROLOL, rid="other", status="stopped")
    assert variants("ccb-rate-slowing", *base(ccb(), stopped)) == []
    amlodipine = named("Amlodipine 5 mg tablet", rid="aml")
    assert variants("ccb-rate-slowing", *base(amlodipine, drug(METOPROLOL))) == []


def test_the_card_is_on_the_draft_under_review() -> None:
    # order-sign: a draft ivabradine with an active verapamil gives the card on the ivabradine.
    from tests.rules.test_card_set import draft, with_drafts

    chart = with_drafts([patient(), egfr(80), ccb(VERAPAMIL)], [draft(IVABRADINE_TABLET, "iva")])
    sign = load_services(h.TERMINOLOGY)["calcinosis-order-sign"]
    fired = [f for f in rules.run(sign.rules, chart) if f.rule == "ccb-rate-slowing"]
    assert [(f.variant, f.facts["drug"].ref) for f in fired] == [
        ("ivabradine", "MedicationRequest/iva")
    ]


# ------------------------------------------------------------------ statin ceilings


@pytest.mark.parametrize(
    ("statin", "limit"),
    [
        (drug(SIMVASTATIN, rid="st"), 10),
        (named("ezetimibe 10 mg / simvastatin 20 mg (Vytorin)", rid="st"), 10),
        (drug(LOVASTATIN, rid="st"), 20),
    ],
)
def test_simvastatin_and_lovastatin_state_their_ceiling(statin: dict[str, Any], limit: int) -> None:
    for code in (DILTIAZEM, VERAPAMIL):
        (finding,) = rules.RULES["ccb-statin-ceiling"](h.record(*base(ccb(code), statin)))
        assert (finding.variant, finding.facts["limit"]) == ("ceiling", limit)


def test_statins_not_cleared_by_cyp3a4_are_silent() -> None:
    assert variants("ccb-statin-ceiling", *base(ccb(), drug(PRAVASTATIN, rid="st"))) == []
    assert variants("ccb-statin-ceiling", *base(ccb(), named("rosuvastatin 10 mg"))) == []


def test_the_new_rules_run_right_after_ccb_av_block() -> None:
    order = load_services(h.TERMINOLOGY)["calcinosis-order-select"].rules
    at = order.index("ccb-av-block")
    assert list(order[at + 1 : at + 5]) == [
        "ccb-sick-sinus",
        "ccb-rate-slowing",
        "ccb-statin-ceiling",
        "verapamil-heart-failure",
    ]


# ------------------------------------------------------------------ verapamil in heart failure


@pytest.mark.parametrize(
    "failure",
    [
        condition(ICD10CM, "I50.22"),  # chronic systolic heart failure
        condition(SNOMED, "84114007"),
        condition(SNOMED, "", text="Insuffisance cardiaque à FEVG altérée"),
    ],
)
def test_verapamil_in_heart_failure_is_a_warning(failure: dict[str, Any]) -> None:
    assert variants("verapamil-heart-failure", *base(failure, ccb(VERAPAMIL))) == ["heart-failure"]
    # no critical row: the codes give neither the ejection fraction nor the severity
    assert all(row.label is None for row in load_table()["verapamil-heart-failure"].rows)


def test_diltiazem_or_a_resolved_heart_failure_is_silent() -> None:
    failure = condition(ICD10CM, "I50.22")
    assert variants("verapamil-heart-failure", *base(failure, ccb(DILTIAZEM))) == []
    resolved = condition(ICD10CM, "I50.22", clinical="resolved")
    assert variants("verapamil-heart-failure", *base(resolved, ccb(VERAPAMIL))) == []
