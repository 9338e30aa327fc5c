"""Issue 14, points 13 and 14: calcinosis type (same-day Ca x P product as context only,
albumin-corrected calcium, no "Order PTH" with a recent PTH) and digital ulcers (a skin ulcer
of a finger, not any skin ulcer)."""

from __future__ import annotations

from typing import Any

import pytest

import tests.helpers as h
from cds_service.cards import CardLibrary
from cds_service.cards.render import Renderer
from cds_service.rules import RULES, calcinosis_lesion
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import ICD10CM, SNOMED, condition, observation, patient, record

RENDERER = Renderer(CardLibrary(DEFAULT_CARDS_DIR, h.TERMINOLOGY))
CALCINOSIS = condition(ICD10CM, "L94.2", rid="calc")
SSC = condition(SNOMED, "89155008", rid="ssc")


def calcium(value: float, days_ago: float = 5, high: float | None = 10.2, **kw: Any) -> Any:
    return observation("17861-6", value, "mg/dL", days_ago, rid="ca", high=high, **kw)


def phosphate(value: float, days_ago: float = 5, high: float | None = 4.5) -> Any:
    return observation("2777-1", value, "mg/dL", days_ago, rid="p", high=high)


def albumin(value: float, days_ago: float = 5, unit: str = "g/L") -> Any:
    return observation("1751-7", value, unit, days_ago, rid="alb")


def pth(value: float, days_ago: float = 5) -> Any:
    return observation("2731-8", value, "pg/mL", days_ago, rid="pth", high=65)


def type_finding(*resources: Any) -> Any:
    found = RULES["calcinosis-type"](record(patient(), CALCINOSIS, *resources))
    return found[0] if found else None


def kinds(finding: Any) -> list[str]:
    return [kind for kind, _fact in finding.facts["abnormalities"]] if finding else []


# --------------------------------------------------------------- point 13: calcinosis type


def test_a_product_alone_is_not_a_trigger() -> None:
    """10.1 x 7.2 = 72.7 mg2/dL2, but neither value is judged abnormal (no range sent)."""
    assert type_finding(calcium(10.1, high=None), phosphate(7.2, high=None)) is None


def test_the_product_is_shown_beside_an_individual_abnormality_from_a_same_day_pair() -> None:
    finding = type_finding(calcium(10.1), phosphate(7.2))  # phosphate above 4.5
    assert kinds(finding) == ["hyperphosphataemia", "calcium-phosphate-product"]
    for lang, words in (("en", "the same day"), ("fr", "le même jour")):
        detail = RENDERER.render(finding, lang, h.PID)["detail"]
        assert words in detail
        assert "3.1.5" in detail


def test_no_product_from_results_of_different_days() -> None:
    finding = type_finding(calcium(10.1, days_ago=5), phosphate(7.2, days_ago=40))
    assert kinds(finding) == ["hyperphosphataemia"]


def test_a_low_albumin_of_the_same_day_unmasks_hypercalcaemia() -> None:
    """Payne: 9.9 + (4.0 - 2.8) = 11.1 mg/dL, above the laboratory's 10.2."""
    finding = type_finding(calcium(9.9), albumin(28))
    assert kinds(finding) == ["hypercalcaemia-corrected", "albumin"]
    corrected = finding.facts["abnormalities"][0][1]
    assert corrected.value == pytest.approx(11.1)
    # the evidence lists the calcium as the laboratory sent it
    assert [e.value for e in finding.evidence if getattr(e, "concept", "") == "calcium"] == [9.9]
    en = RENDERER.render(finding, "en", h.PID)["detail"]
    fr = RENDERER.render(finding, "fr", h.PID)["detail"]
    assert "calcium corrected for albumin 11.1 mg/dL" in en
    assert "Payne 1973" in en
    assert "calcémie corrigée pour l'albumine 2,77 mmol/L" in fr
    assert "Payne 1973" in fr


def test_albumin_in_g_per_dl_and_of_another_day() -> None:
    assert kinds(type_finding(calcium(9.9), albumin(2.8, unit="g/dL"))) == [
        "hypercalcaemia-corrected",
        "albumin",
    ]
    assert type_finding(calcium(9.9), albumin(28, days_ago=30)) is None  # not the same day


def test_a_normal_albumin_keeps_a_high_calcium_high() -> None:
    assert kinds(type_finding(calcium(10.8), albumin(40))) == [
        "hypercalcaemia-corrected",
        "albumin",
    ]


def test_the_laboratory_corrected_calcium_is_not_corrected_again() -> None:
    corrected = observation("29265-6", 2.7, "mmol/L", 5, rid="cac", high=2.6)
    finding = type_finding(corrected, albumin(25))
    assert kinds(finding) == ["hypercalcaemia-lab-corrected"]


def test_without_a_range_the_laboratory_flag_stays_the_judge() -> None:
    flagged = calcium(10.4, high=None, flags=("H",))
    assert kinds(type_finding(flagged, albumin(45))) == ["hypercalcaemia"]


def suggestion_labels(finding: Any) -> list[str]:
    return [s["label"] for s in RENDERER.render(finding, "en", h.PID).get("suggestions", [])]


def test_order_pth_only_without_a_recent_pth() -> None:
    assert suggestion_labels(type_finding(phosphate(6.0))) == ["Order PTH"]
    assert suggestion_labels(type_finding(phosphate(6.0), pth(40))) == []
    assert suggestion_labels(type_finding(phosphate(6.0), pth(40, days_ago=400))) == ["Order PTH"]


# --------------------------------------------------------------- point 14: digital ulcers


def ulcer(text: str | None = None, site: dict[str, Any] | None = None) -> dict[str, Any]:
    res = condition(SNOMED, "46742003", rid="ulcer")
    if text:
        res["code"]["text"] = text
    if site:
        res["bodySite"] = [site]
    return res


FINGER_CODE = {"coding": [{"system": SNOMED, "code": "7569003"}]}
FINGER_TEXT = {"text": "Pulpe de l'index droit"}
LEG = {"text": "Left lower leg"}


def risk_factors(*resources: Any) -> list[str]:
    found = RULES["calcinosis-risk-screening"](record(patient(), SSC, *resources))
    return [key for key, _ in found[0].facts["factors"]] if found else []


@pytest.mark.parametrize(
    ("the_ulcer", "digital"),
    [
        (ulcer(), False),  # a skin ulcer without a site
        (ulcer("Venous leg ulcer"), False),
        (ulcer(site=LEG), False),
        (ulcer(site=FINGER_CODE), True),  # bodySite coded, no text at all
        (ulcer(site=FINGER_TEXT), True),
        (ulcer("Ulcère pulpaire du pouce"), True),
        (ulcer("Skin ulcer, right index finger"), True),
        (condition(ICD10CM, "", rid="du", text="ulcères digitaux"), True),  # by wording
    ],
)
def test_a_digital_ulcer_is_on_a_finger(the_ulcer: dict[str, Any], digital: bool) -> None:
    assert ("digital-ulcer" in risk_factors(the_ulcer)) is digital


def test_a_finger_code_alone_is_not_a_condition() -> None:
    finger = condition(SNOMED, "7569003", rid="finger")
    assert record(patient(), finger).conditions == ()


def lesion_features(*resources: Any) -> list[str]:
    return calcinosis_lesion.lesion_features(record(patient(), CALCINOSIS, *resources))[0]


def test_only_a_digital_ulcer_or_the_ulcerated_calcinosis_is_an_ulcerated_lesion() -> None:
    assert lesion_features(ulcer()) == []
    assert lesion_features(ulcer("Sacral pressure ulcer")) == []
    assert lesion_features(ulcer(site=FINGER_CODE)) == ["ulcerated"]
    assert lesion_features(ulcer("Ulcerated calcinosis of the left elbow")) == ["ulcerated"]
