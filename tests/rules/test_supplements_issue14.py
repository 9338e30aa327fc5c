"""Issue 14, point 12: calcium (supplements and calcium-based phosphate binders) and vitamin D
(native and active: calcitriol, alfacalcidol) in calcinosis or calciphylaxis.

`calcium-vitamin-d-calcinosis` is a warning (stop or lower the dose) with calciphylaxis on the
problem list, or calcinosis with a recent calcium above range (albumin-corrected) or a same-day
calcium x phosphate product above 70 mg2/dL2; otherwise, with calcinosis, the info review,
which alone is folded into the synthesis card at patient-view."""

from __future__ import annotations

from typing import Any

import pytest

import tests.helpers as h
from cds_service.cards import CardLibrary
from cds_service.cards.render import Renderer
from cds_service.knowledge.safety import _check_criterion
from cds_service.rules import RULES
from cds_service.rules.base import Finding
from cds_service.rules.info_card import compose
from cds_service.rules.predicates import high_calcium
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import ATC, ICD10CM, condition, drug, observation, patient, record

RULE = "calcium-vitamin-d-calcinosis"
RENDERER = Renderer(CardLibrary(DEFAULT_CARDS_DIR, h.TERMINOLOGY))
CALCINOSIS = condition(ICD10CM, "L94.2", rid="calc")
CALCIPHYLAXIS = condition(ICD10CM, "", rid="cph", text="Calciphylaxis of both calves")
CALCITRIOL = drug("A11CC04", system=ATC, rid="ctl")
ALFACALCIDOL = drug("A11CC03", system=ATC, rid="afc")
CALCIUM_ACETATE = drug("V03AE07", system=ATC, rid="cac")
CALCIUM_CARBONATE = drug("1897", rid="cco")


def calcium(value: float, days_ago: float = 5, high: float | None = 10.2) -> Any:
    return observation("17861-6", value, "mg/dL", days_ago, rid="ca", high=high)


def ionised(value: float, days_ago: float = 5, high: float | None = 1.32) -> Any:
    return observation("1995-0", value, "mmol/L", days_ago, rid="ica", high=high)


def phosphate(value: float, days_ago: float = 5, high: float | None = 4.5) -> Any:
    return observation("2777-1", value, "mg/dL", days_ago, rid="p", high=high)


def albumin(value: float, days_ago: float = 5) -> Any:
    return observation("1751-7", value, "g/L", days_ago, rid="alb")


def variants(*resources: Any) -> list[str]:
    return [f.variant for f in RULES[RULE](record(patient(), *resources))]


def findings(*resources: Any) -> list[Finding]:
    return RULES[RULE](record(patient(), *resources))


# --------------------------------------------------------------- hypercalcaemia


@pytest.mark.parametrize("order", [CALCITRIOL, ALFACALCIDOL, CALCIUM_ACETATE, CALCIUM_CARBONATE])
def test_calcinosis_with_a_high_calcium_is_a_warning_for_each_drug(order: Any) -> None:
    assert variants(CALCINOSIS, order, calcium(10.9)) == ["hypercalcaemia"]


def test_a_normal_calcium_keeps_the_info_review() -> None:
    assert variants(CALCINOSIS, CALCITRIOL, calcium(9.6), phosphate(3.5)) == ["review"]


def test_a_low_albumin_of_the_same_day_unmasks_hypercalcaemia() -> None:
    """9.9 + (4.0 - 2.8) = 11.1 mg/dL, above 10.2: evidence is the measured calcium and the
    albumin."""
    found = findings(CALCINOSIS, CALCITRIOL, calcium(9.9), albumin(28))
    assert [f.variant for f in found] == ["hypercalcaemia"]
    refs = [getattr(e, "ref", "") for e in found[0].evidence]
    assert "Observation/ca" in refs
    assert "Observation/alb" in refs


def test_an_albumin_of_another_day_does_not_correct() -> None:
    assert variants(CALCINOSIS, CALCITRIOL, calcium(9.9, 5), albumin(28, 30)) == ["review"]


def test_a_high_albumin_corrects_a_high_calcium_back_into_range() -> None:
    """10.4 + (4.0 - 4.8) = 9.6 mg/dL: the laboratory's H flag was about the measured value."""
    assert variants(CALCINOSIS, CALCITRIOL, calcium(10.4), albumin(48)) == ["review"]


def test_a_high_calcium_older_than_90_days_is_not_current() -> None:
    assert variants(CALCINOSIS, CALCITRIOL, calcium(10.9, days_ago=120)) == ["review"]


def test_a_high_ionised_calcium_counts_without_a_total_calcium() -> None:
    assert variants(CALCINOSIS, CALCITRIOL, ionised(1.45)) == ["hypercalcaemia"]


def test_high_calcium_predicate() -> None:
    chart = record(patient(), calcium(10.9))
    assert [lab.concept for lab in high_calcium(chart, 90)] == ["calcium"]
    assert high_calcium(record(patient(), calcium(9.0)), 90) == []
    assert high_calcium(record(patient()), 90) == []


# --------------------------------------------------------------- calcium x phosphate


def test_a_high_same_day_product_alone_keeps_the_review() -> None:
    """10.0 x 7.5 = 75 mg2/dL2, calcium in range: KDIGO 2017 3.1.5 judges calcium and phosphate
    each on its own, and calcinosis-type shows the product as context only, so this card does
    not turn it into a warning either."""
    assert variants(CALCINOSIS, CALCIUM_CARBONATE, calcium(10.0), phosphate(7.5)) == ["review"]


# --------------------------------------------------------------- calciphylaxis


def test_calciphylaxis_is_a_warning_even_without_calcinosis() -> None:
    assert variants(CALCIPHYLAXIS, CALCIUM_ACETATE) == ["calciphylaxis"]
    assert variants(CALCIPHYLAXIS, CALCINOSIS, CALCITRIOL, calcium(10.9)) == ["calciphylaxis"]


def test_no_calcinosis_and_no_calciphylaxis_is_silent_even_with_hypercalcaemia() -> None:
    assert variants(CALCITRIOL, calcium(10.9)) == []


# --------------------------------------------------------------- cards and composition


@pytest.mark.parametrize(
    ("resources", "variant"),
    [
        ((CALCINOSIS, CALCITRIOL, calcium(10.9)), "hypercalcaemia"),
        ((CALCIPHYLAXIS, CALCIUM_ACETATE), "calciphylaxis"),
    ],
)
def test_warning_cards_cite_kdigo_in_both_languages(
    resources: tuple[Any, ...], variant: str
) -> None:
    (finding,) = findings(*resources)
    assert finding.variant == variant
    for lang in ("en", "fr"):
        card = RENDERER.render(finding, lang, h.PID)
        assert card["indicator"] == "warning"
        assert "4.1.5" in card["detail"]
        assert card["suggestions"], "a stop suggestion"


def test_only_the_review_is_folded_into_the_synthesis_card() -> None:
    synthesis = Finding("calcinosis-synthesis", "workup", facts={"features": [], "missing": []})
    warning = Finding(RULE, "hypercalcaemia", facts={})
    review = Finding(RULE, "review", facts={})
    kept = compose("patient-view", [synthesis, warning])
    assert [f.variant for f in kept if f.rule == RULE] == ["hypercalcaemia"]
    kept = compose("patient-view", [synthesis, review])
    assert [f.rule for f in kept] == ["calcinosis-synthesis"]


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"calcium_above_range": {}}, "calcium_above_range: expected keys"),
    ],
)
def test_the_new_criteria_check_their_arguments(when: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _check_criterion("test", when)
