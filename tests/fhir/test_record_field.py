"""Laboratory results, conditions, procedures and the patient as real EHRs send them (issue 11,
sections 2 and 3): molar units, text values and comparators, other code-system spellings,
chronic statuses, abatement, dialysis sessions, kidney transplants, partial birth dates, death."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.knowledge.renal import ckd_epi_2021, gfr_category
from cds_service.terminology import Terminology
from tests.conftest import SERVICES, load_request
from tests.helpers import (
    ICD10CM,
    LOINC,
    PID,
    SNOMED,
    condition,
    creatinine,
    egfr,
    observation,
    patient,
    record,
    when,
)

TERMINOLOGY = Terminology.load()


def text_result(code: str, text: str, days_ago: float = 5, rid: str = "t1") -> dict[str, Any]:
    res = observation(code, 0, "x", days_ago, rid)
    del res["valueQuantity"]
    res["valueString"] = text
    return res


def procedure(
    code: str, days_ago: float, rid: str = "pr1", status: str = "completed"
) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": rid,
        "status": status,
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "performedDateTime": when(days_ago),
    }


def dated(res: dict[str, Any], days_ago: float, key: str = "recordedDate") -> dict[str, Any]:
    res[key] = when(days_ago)[:10]
    return res


# --------------------------------------------------------------------------- units, molar codes


@pytest.mark.parametrize(
    ("code", "value", "unit", "concept", "canonical"),
    [
        ("59826-8", 176.8, "umol/L", "creatinine", 2.0),  # blood, molar
        ("77140-2", 88.4, "µmol/L", "creatinine", 1.0),  # serum, plasma or blood, molar
        ("77140-2", 88.4, "μmol/l", "creatinine", 1.0),  # Greek mu
        ("2160-0", 12, "mg/L", "creatinine", 1.2),  # French laboratories
        ("2000-8", 2.5, "mmol/L", "calcium", 10.02),
        ("29265-6", 2.5, "mmol/L", "calcium", 10.02),  # albumin-corrected
        ("17861-6", 5, "mEq/L", "calcium", 10.02),
        ("14879-1", 1.5, "mmol/L", "phosphate", 4.6455),
        ("14866-8", 10, "pmol/L", "pth", 94.3),
        ("14635-7", 49.92, "nmol/L", "vitamin-d", 20.0),
        ("98979-8", 42, "mL/mn/1.73m2", "egfr", 42.0),
        ("98979-8", 42, "mL/min/1.73 m²", "egfr", 42.0),
    ],
)
def test_molar_and_blood_variants_in_canonical_units(
    code: str, value: float, unit: str, concept: str, canonical: float
) -> None:
    lab = record(patient(), observation(code, value, unit, 3)).labs[concept]
    assert lab.value == pytest.approx(canonical, rel=1e-3)
    assert lab.code == code


# --------------------------------------------------------------------------- text and comparators


@pytest.mark.parametrize(
    ("text", "comparator", "category", "label"),
    [
        ("<15", "<", "G5", "G5"),
        ("< 30 mL/min/1.73m2", "<", "G4", "G4-G5"),
        (">60", ">", "G2", "G1-G2"),
        ("> 90", ">", "G1", "G1"),
        (">=90", ">=", "G1", "G1"),
        ("Greater than 60", ">", "G2", "G1-G2"),
        ("inférieur à 15", "<", "G5", "G5"),
        ("42", None, "G3b", "G3b"),
    ],
)
def test_egfr_as_text_keeps_its_comparator(
    text: str, comparator: str | None, category: str, label: str
) -> None:
    rec = record(patient(), text_result("98979-8", text))
    assert rec.labs["egfr"].comparator == comparator
    status = rec.renal
    assert (status.source, status.comparator, status.category, status.category_label) == (
        "measured",
        comparator,
        category,
        label,
    )


def test_quantity_comparator_is_kept_and_bounds_are_compared_beyond() -> None:
    res = egfr(15)
    res["valueQuantity"]["comparator"] = "<"
    status = record(patient(), res).renal
    assert status.comparator == "<"
    assert status.rule_egfr is not None
    assert status.rule_egfr < 15
    res = egfr(60)
    res["valueQuantity"]["comparator"] = ">"
    status = record(patient(), res).renal
    assert status.rule_egfr is not None
    assert status.rule_egfr > 60


def test_text_without_a_number_falls_back_to_the_previous_result() -> None:
    rec = record(patient(), text_result("98979-8", "see comment", 1, "t1"), egfr(40, 20))
    assert rec.labs["egfr"].value == 40


def test_text_creatinine_needs_its_unit() -> None:
    rec = record(patient(), text_result("2160-0", "<0.5"))
    assert "creatinine" not in rec.labs
    assert [n.kind for n in rec.notes] == ["unit-not-recognised"]


def test_creatinine_bound_gives_the_opposite_egfr_bound() -> None:
    rec = record(patient("female", "1960-06-15"), text_result("2160-0", ">10 mg/dL"))
    status = rec.renal
    assert (status.source, status.comparator, status.category) == ("computed", "<", "G5")
    assert status.egfr == pytest.approx(ckd_epi_2021(10, 66, "female"))


def test_a_lower_bound_is_not_above_the_reference_range() -> None:
    res = text_result("17861-6", "<12 mg/dL")
    res["referenceRange"] = [{"high": {"value": 10.5, "unit": "mg/dL"}}]
    assert not record(patient(), res).labs["calcium"].above_range
    res["valueString"] = ">10.5 mg/dL"
    assert record(patient(), res).labs["calcium"].above_range


def _patient_view(client: FlaskClient, observations: list[dict[str, Any]], **patch: Any) -> Any:
    """Fixture 02 (SSc, calcinosis, aluminium hydroxide) with other eGFR results."""
    body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
    pid = body["context"]["patientId"]
    entries = []
    for res in observations:
        res = copy.deepcopy(res)
        res["subject"] = {"reference": f"Patient/{pid}"}
        entries.append({"resource": res})
    body["prefetch"]["observations"] = {"resourceType": "Bundle", "type": "searchset"}
    body["prefetch"]["observations"]["entry"] = entries
    body["prefetch"]["patient"].update(patch)
    response = client.post(f"/cds-services/{SERVICES['patient-view']}", json=body)
    assert response.status_code == 200, response.json
    return response.json["cards"]


def _aluminium(cards: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [c for c in cards if c["source"]["topic"]["code"] == "aluminium-hydroxide-renal"]
    return found[0] if found else None


def test_card_shows_egfr_below_15_and_fires_the_severe_caution(client: FlaskClient) -> None:
    card = _aluminium(_patient_view(client, [text_result("98979-8", "<15")]))
    assert card is not None
    assert card["indicator"] == "critical"
    assert "eGFR < 15" in card["summary"] + card["detail"]
    assert "G5" in card["detail"]


def test_egfr_above_60_gives_no_renal_caution(client: FlaskClient) -> None:
    assert _aluminium(_patient_view(client, [text_result("98979-8", ">60")])) is None


def test_card_in_french_keeps_the_comparator(client: FlaskClient) -> None:
    body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
    res = text_result("98979-8", "<15")
    res["subject"] = {"reference": f"Patient/{body['context']['patientId']}"}
    body["prefetch"]["observations"]["entry"] = [{"resource": res}]
    response = client.post(
        f"/cds-services/{SERVICES['patient-view']}",
        json=body,
        headers={"Accept-Language": "fr"},
    )
    card = _aluminium(response.json["cards"])
    assert card is not None
    assert "DFGe < 15" in card["summary"] + card["detail"]


def test_deceased_patient_gets_no_cards(client: FlaskClient) -> None:
    assert _patient_view(client, [egfr(22)])  # the same patient alive: cards
    assert _patient_view(client, [egfr(22)], deceasedBoolean=True) == []
    assert _patient_view(client, [egfr(22)], deceasedDateTime="2026-11-01") == []
    assert not record(patient()).patient.deceased
    assert record({**patient(), "deceasedBoolean": True}).patient.deceased


# --------------------------------------------------------------------------- code systems


@pytest.mark.parametrize(
    ("system", "code", "valueset"),
    [
        ("urn:oid:2.16.840.1.113883.6.90", "M34.1", "systemic-sclerosis"),  # ICD-10-CM OID
        ("2.16.840.1.113883.6.90", "M34.1", "systemic-sclerosis"),  # bare OID
        ("urn:oid:2.16.840.1.113883.6.3", "M34.1", "systemic-sclerosis"),  # WHO ICD-10 OID
        ("https://smt.esante.gouv.fr/terminologie-cim-10", "M341", "systemic-sclerosis"),
        ("https://smt.esante.gouv.fr/terminologie-cim-10/", "L94.2", "calcinosis"),
        ("http://data.esante.gouv.fr/atih/cim10", "N18.5", "ckd-stage-5"),
        ("http://data.esante.gouv.fr/atih/cim10", "N1850", "ckd-stage-5"),  # an extension code
        (
            "https://mos.esante.gouv.fr/NOS/TRE_R310-CIM10/FHIR/TRE-R310-CIM10",
            "Z99.2",
            "dialysis",
        ),
        ("http://snomed.info/sct/900000000000207008/version/20230131", "89155008", None),
        ("http://snomed.info/sct", "89155008 |Systemic sclerosis|", None),
        ("https://snomed.info/sct/", "89155008", None),
        ("urn:oid:2.16.840.1.113883.6.96", "89155008", None),
        ("HTTP://hl7.org/fhir/sid/icd-10-cm/", "m34.1", "systemic-sclerosis"),
    ],
)
def test_code_systems_by_their_other_spellings(
    system: str, code: str, valueset: str | None
) -> None:
    found = TERMINOLOGY.match({"coding": [{"system": system, "code": code}]}, "Condition")
    assert [m.by for m in found] == ["code"]
    assert found[0].valueset == (valueset or "systemic-sclerosis")


@pytest.mark.parametrize(
    ("system", "code", "valueset", "applies_to"),
    [
        ("urn:oid:2.16.840.1.113883.6.1", "98979-8", "egfr", "Observation"),
        ("https://loinc.org/", "98979-8", "egfr", "Observation"),
        ("urn:oid:2.16.840.1.113883.6.88", "612", "aluminium-hydroxide", "MedicationRequest"),
    ],
)
def test_loinc_and_rxnorm_by_oid(system: str, code: str, valueset: str, applies_to: str) -> None:
    found = TERMINOLOGY.match({"coding": [{"system": system, "code": code}]}, applies_to)
    assert valueset in [m.valueset for m in found]


def test_unknown_systems_and_short_french_prefixes_do_not_match() -> None:
    assert not TERMINOLOGY.match(
        {"coding": [{"system": "urn:oid:1.2.3", "code": "M34.1"}]}, "Condition"
    )
    # An extension is never trimmed below four characters (N18 alone is not a stage).
    cim = "http://data.esante.gouv.fr/atih/cim10"
    assert not TERMINOLOGY.match({"coding": [{"system": cim, "code": "N18"}]}, "Condition")


def test_observation_coded_by_loinc_oid_is_read() -> None:
    res = egfr(33)
    res["code"]["coding"][0]["system"] = "urn:oid:2.16.840.1.113883.6.1"
    assert record(patient(), res).labs["egfr"].value == 33
    assert LOINC  # the canonical URI stays in the value sets


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(
    ("code", "valueset", "clinical", "counts"),
    [
        ("89155008", "systemic-sclerosis", "remission", True),  # SSc is chronic
        ("89155008", "systemic-sclerosis", "inactive", True),
        ("89155008", "systemic-sclerosis", "resolved", False),  # an explicit "resolved"
        ("L94.2", "calcinosis", "remission", True),  # deposits persist and recur
        ("L94.2", "calcinosis", "inactive", False),
        ("L94.2", "calcinosis", "resolved", False),
        ("N18.4", "ckd-stage-4", "remission", False),
    ],
)
def test_chronic_diseases_count_when_quiescent(
    code: str, valueset: str, clinical: str, counts: bool
) -> None:
    system = SNOMED if code[0].isdigit() else ICD10CM
    rec = record(patient(), condition(system, code, clinical=clinical))
    assert rec.has_condition(valueset) is counts


@pytest.mark.parametrize(
    "abatement",
    [
        {"abatementDateTime": "2025-01-01"},
        {
            "abatementAge": {
                "value": 60,
                "unit": "a",
                "system": "http://unitsofmeasure.org",
                "code": "a",
            }
        },
        {"abatementPeriod": {"start": "2024-01-01", "end": "2025-01-01"}},
        {"abatementString": "2019"},
    ],
)
def test_abatement_without_clinical_status_means_inactive(abatement: dict[str, Any]) -> None:
    ckd = {**condition(ICD10CM, "N18.4", clinical=None), **abatement}
    assert not record(patient(), ckd).has_condition("ckd-stage-4")
    dialysis = {**condition(ICD10CM, "Z99.2", clinical=None), **abatement}
    status = record(patient(), dialysis, egfr(48, 5)).renal
    assert (status.source, status.dialysis) == ("measured", False)
    ssc = {**condition(SNOMED, "89155008", clinical=None), **abatement}
    assert record(patient(), ssc).has_condition("systemic-sclerosis")  # chronic


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("Limited scleroderma", True),
        ("Sclérodermie cutanée limitée", True),
        ("Sclérodermie systémique", True),
        ("ScS", True),
        ("SSc (CREST)", True),
        ("dcSSc", True),
        ("CREST syndrome", True),
        ("CREST", True),  # the acronym as the whole text
        ("Crest.", True),
        ("Iliac crest pain", False),  # "crest" inside other words is not the syndrome
        ("Localized scleroderma (morphea)", False),
        ("Sclerosing cholangitis", False),
    ],
)
def test_systemic_sclerosis_by_text(text: str, counts: bool) -> None:
    rec = record(patient(), condition("", "", text=text))
    assert rec.has_condition("systemic-sclerosis") is counts


# --------------------------------------------------------------------------- dialysis, transplant


@pytest.mark.parametrize(
    ("code", "days_ago", "status", "dialysis"),
    [
        ("302497006", 3, "completed", True),  # Hemodialysis (procedure)
        ("71192002", 30, "in-progress", True),  # Peritoneal dialysis (procedure)
        ("238318009", 89, "completed", True),  # CAPD
        ("302497006", 120, "completed", False),  # older than 90 days
        ("302497006", 3, "entered-in-error", False),
        ("302497006", 3, "not-done", False),
        ("10848006", 3, "completed", False),  # removal of a PD catheter is not a session
    ],
)
def test_dialysis_from_procedures(code: str, days_ago: float, status: str, dialysis: bool) -> None:
    renal = record(patient(), procedure(code, days_ago, status=status), egfr(40, 2)).renal
    assert renal.dialysis is dialysis
    if dialysis:
        assert (renal.source, renal.category, renal.procedure is not None) == ("coded", "G5D", True)
        assert renal.lab is not None  # the eGFR stays visible
    else:
        assert renal.source == "measured"


def test_transplant_after_the_last_session_ends_dialysis() -> None:
    rec = record(
        patient(),
        procedure("302497006", 60, "hd"),
        procedure("70536003", 40, "tx"),  # Transplant of kidney (procedure)
        egfr(52, 10),
    )
    assert (rec.renal.source, rec.renal.dialysis, rec.renal.category) == ("measured", False, "G3a")
    assert rec.renal.superseded is not None
    assert rec.renal.superseded.ref == "Procedure/hd"


def test_a_session_after_the_transplant_is_dialysis_again() -> None:
    rec = record(
        patient(),
        procedure("70536003", 400, "tx"),
        procedure("302497006", 2, "hd"),
        egfr(12, 5),
    )
    assert rec.renal.dialysis


def test_dialysis_condition_with_a_transplant_after_it_does_not_outweigh_the_egfr() -> None:
    rec = record(
        patient(),
        dated(condition(ICD10CM, "Z99.2", rid="dial"), 800),
        dated(condition(ICD10CM, "Z94.0", rid="tx"), 500),
        egfr(55, 10),
    )
    assert (rec.renal.source, rec.renal.dialysis, rec.renal.egfr) == ("measured", False, 55)
    # Without the transplant the dialysis condition still wins.
    rec = record(patient(), dated(condition(ICD10CM, "Z99.2"), 800), egfr(55, 10))
    assert rec.renal.dialysis


def test_undated_transplant_never_ends_a_dated_session() -> None:
    rec = record(patient(), condition(ICD10CM, "Z94.0"), procedure("302497006", 2), egfr(11, 3))
    assert rec.renal.dialysis


def test_newest_wins_between_a_coded_stage_and_a_laboratory_result() -> None:
    # A CKD 4 asserted 2 days ago outweighs an eGFR of 50 measured 100 days ago...
    rec = record(patient(), dated(condition(ICD10CM, "N18.4"), 2), egfr(50, 100))
    status = rec.renal
    assert (status.source, status.category) == ("coded", "G4")
    assert status.superseded is not None
    assert status.superseded.concept == "egfr"
    # ...and a recent eGFR outweighs a stage coded long before it, naming it.
    rec = record(patient(), dated(condition(ICD10CM, "N18.4"), 300), egfr(50, 10))
    status = rec.renal
    assert (status.source, status.category) == ("measured", "G3a")
    assert status.superseded is not None
    assert status.superseded.ref == "Condition/c1"


def test_the_card_says_which_renal_evidence_it_used(client: FlaskClient) -> None:
    body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
    pid = body["context"]["patientId"]
    ckd = dated(condition(ICD10CM, "N18.4", rid="ckd4"), 2)
    ckd["subject"] = {"reference": f"Patient/{pid}"}
    body["prefetch"]["conditions"]["entry"].append({"resource": ckd})
    response = client.post(f"/cds-services/{SERVICES['patient-view']}", json=body)
    card = _aluminium(response.json["cards"])
    assert card is not None
    assert "more recent than the last laboratory result" in card["detail"]


# --------------------------------------------------------------------------- partial birth dates


def test_year_only_birth_date_gives_an_age_range() -> None:
    rec = record(patient("female", "1960"))
    assert rec.patient.birth_date is None
    assert rec.patient.age_range_on(when_date(0)) == (65, 66)
    assert record(patient("female", "1960-02")).patient.birth_range is not None


def when_date(days_ago: float) -> Any:
    from datetime import date

    return date.fromisoformat(when(days_ago)[:10])


def test_partial_birth_date_same_category_at_both_ends() -> None:
    # Creatinine 2.5 mg/dL, woman born in 1960: about 21 at 65 and at 66 (G4 both).
    status = record(patient("female", "1960"), creatinine(2.5, days_ago=2)).renal
    assert status.source == "computed"
    assert status.age_range == (65, 66)
    assert status.category == "G4"
    assert status.egfr == pytest.approx(ckd_epi_2021(2.5, 66, "female"))


def test_partial_birth_date_straddling_a_category_is_not_computable() -> None:
    # Find a creatinine whose eGFR crosses 60 between the two possible ages.
    scr = next(
        x / 1000
        for x in range(800, 1200)
        if gfr_category(ckd_epi_2021(x / 1000, 65, "male"))
        != gfr_category(ckd_epi_2021(x / 1000, 66, "male"))
    )
    status = record(patient("male", "1960"), creatinine(scr, days_ago=2)).renal
    assert (status.source, status.reason) == ("unknown", "egfr-not-computable")
    assert "exact birth date" in status.missing
    # An older measured eGFR is then used.
    status = record(patient("male", "1960"), creatinine(scr, days_ago=2), egfr(70, 30)).renal
    assert status.source == "measured"


def test_partial_birth_date_card_says_the_age_is_approximate(client: FlaskClient) -> None:
    body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
    pid = body["context"]["patientId"]
    body["prefetch"]["patient"]["birthDate"] = "1963"
    scr = creatinine(2.5, days_ago=5)
    scr["subject"] = {"reference": f"Patient/{pid}"}
    body["prefetch"]["observations"]["entry"] = [{"resource": scr}]
    response = client.post(f"/cds-services/{SERVICES['patient-view']}", json=body)
    card = _aluminium(response.json["cards"])
    assert card is not None
    assert "age approximate" in card["detail"]


def test_the_card_names_the_dialysis_session(client: FlaskClient) -> None:
    body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
    session = procedure("302497006", 2, "hd")
    session["subject"] = {"reference": f"Patient/{body['context']['patientId']}"}
    body["prefetch"]["procedures"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": session}],
    }
    response = client.post(f"/cds-services/{SERVICES['patient-view']}", json=body)
    card = _aluminium(response.json["cards"])
    assert card is not None
    assert card["indicator"] == "critical"
    assert "dialysis session on" in card["detail"]


def test_the_card_names_the_older_coded_stage_a_newer_egfr_outweighed(
    client: FlaskClient,
) -> None:
    body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
    ckd = dated(condition(ICD10CM, "N18.30", rid="ckd3"), 900)
    ckd["subject"] = {"reference": f"Patient/{body['context']['patientId']}"}
    body["prefetch"]["conditions"]["entry"].append({"resource": ckd})
    response = client.post(f"/cds-services/{SERVICES['patient-view']}", json=body)
    card = _aluminium(response.json["cards"])
    assert card is not None
    assert "more recent than" in card["detail"]
    assert "coded on the problem list" in card["detail"]


def test_french_cim10_extension_with_a_plus_sign() -> None:
    cim = "https://smt.esante.gouv.fr/terminologie-cim-10"
    found = TERMINOLOGY.match({"coding": [{"system": cim, "code": "N18.5+0"}]}, "Condition")
    assert [m.valueset for m in found] == ["ckd-stage-5"]
