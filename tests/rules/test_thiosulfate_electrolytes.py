"""Issue 14, point 5 (intravenous sodium thiosulfate): a parenteral sodium thiosulfate order is
checked against the latest bicarbonate / total CO2 and sodium within 14 days
(cds_service/knowledge/safety.yaml ``thiosulfate-acidosis``, ``thiosulfate-sodium``): below /
above the laboratory's range is a warning (anion-gap acidosis, Hundemer 2016; sodium load,
Pedmark label), no result within 14 days asks for the test. Only parenteral orders
(``route: parenteral``): a topical preparation is never checked; an intralesional injection
written on the injection product is (rules/predicates.py is_parenteral reads "injection")."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cds_service.fhir.units import to_canonical
from cds_service.hooks.services import SERVICES_FILE, _flatten
from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import ATC, RXNORM, medication, observation, patient, record, variants

ACIDOSIS = "thiosulfate-acidosis"
SODIUM_RULE = "thiosulfate-sodium"
BICARBONATE_LOINC = "2028-9"
SODIUM_LOINC = "2951-2"
THIOSULFATE_ATC = "V03AB06"


def thiosulfate(dosage: str = "12.5 g intravenously after each dialysis session") -> dict[str, Any]:
    return medication(
        rid="sts",
        medicationCodeableConcept={"coding": [{"system": ATC, "code": THIOSULFATE_ATC}]},
        dosageInstruction=[{"text": dosage}],
    )


def named_order(text: str, dosage: str) -> dict[str, Any]:
    return medication(
        rid="sts",
        medicationCodeableConcept={"text": text},
        dosageInstruction=[{"text": dosage}],
    )


def lab(
    code: str,
    value: float,
    days_ago: float = 3,
    low: float | None = None,
    high: float | None = None,
    unit: str = "mmol/L",
    flags: tuple[str, ...] = (),
) -> dict[str, Any]:
    res = observation(code, value, unit, days_ago, rid=f"o-{code}", flags=flags)
    bounds = {k: {"value": v, "unit": unit} for k, v in (("low", low), ("high", high)) if v}
    if bounds:
        res["referenceRange"] = [bounds]
    return res


def bicarbonate(value: float, days_ago: float = 3, **kw: Any) -> dict[str, Any]:
    kw.setdefault("low", 22)
    kw.setdefault("high", 29)
    return lab(BICARBONATE_LOINC, value, days_ago, **kw)


def sodium(value: float, days_ago: float = 3, **kw: Any) -> dict[str, Any]:
    kw.setdefault("low", 135)
    kw.setdefault("high", 145)
    return lab(SODIUM_LOINC, value, days_ago, **kw)


def both(*resources: dict[str, Any]) -> tuple[list[str], list[str]]:
    return (
        variants(ACIDOSIS, patient(), *resources),
        variants(SODIUM_RULE, patient(), *resources),
    )


# ------------------------------------------------------------------------- acidosis


def test_a_low_bicarbonate_before_an_infusion_is_the_acidosis_warning() -> None:
    assert both(bicarbonate(17), sodium(139), thiosulfate()) == (["acidosis"], [])


def test_a_low_flag_without_a_range_counts() -> None:
    low = bicarbonate(21, low=None, high=None, flags=("L",))
    assert variants(ACIDOSIS, patient(), low, thiosulfate()) == ["acidosis"]


def test_a_total_co2_in_meq_per_litre_is_read() -> None:
    assert to_canonical("bicarbonate", 18, ["mEq/L"]) == 18
    assert to_canonical("sodium", 150, ["meq/l"]) == 150
    low = bicarbonate(18, unit="mEq/L")
    assert variants(ACIDOSIS, patient(), low, thiosulfate()) == ["acidosis"]


# ------------------------------------------------------------------------- sodium


def test_a_high_sodium_before_an_infusion_is_the_sodium_load_warning() -> None:
    assert both(bicarbonate(24), sodium(148), thiosulfate()) == ([], ["hypernatraemia"])


def test_low_bicarbonate_and_high_sodium_are_two_findings_about_one_order() -> None:
    # one card per order: rules/card_set.py merges them (fixtures 112, 115, 128)
    chart = record(patient(), bicarbonate(17), sodium(149), thiosulfate())
    findings = [f for rule in (ACIDOSIS, SODIUM_RULE) for f in RULES[rule](chart)]
    assert [(f.rule, f.variant) for f in findings] == [
        (ACIDOSIS, "acidosis"),
        (SODIUM_RULE, "hypernatraemia"),
    ]
    assert len({f.facts["drug"].ref for f in findings}) == 1


# ------------------------------------------------------------------ not checked


def test_no_result_within_14_days_asks_for_both_tests() -> None:
    assert both(thiosulfate()) == (["unchecked"], ["unchecked"])
    old = (bicarbonate(24, days_ago=20), sodium(139, days_ago=20))
    assert both(*old, thiosulfate()) == (["unchecked"], ["unchecked"])


def test_normal_recent_results_are_silent() -> None:
    assert both(bicarbonate(22), sodium(145), thiosulfate()) == ([], [])


def test_an_old_abnormal_result_is_not_current_data_but_is_not_a_check_either() -> None:
    # 20 days old: not current, so not "low"; and no recent result, so "check it"
    assert both(bicarbonate(15, days_ago=20), sodium(139), thiosulfate()) == (["unchecked"], [])


# ------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("order", "checked"),
    [
        (thiosulfate(), True),
        (named_order("Sodium thiosulfate 250 mg/mL injection", "0.5 mL intralesional"), True),
        (named_order("thiosulfate de sodium", "12,5 g en perfusion IV"), True),
        (named_order("Sodium thiosulfate 10 % in petrolatum, topical", "apply twice a day"), False),
        (named_order("sodium thiosulfate 25 % cream", "apply to the nodule"), False),
        (thiosulfate(dosage="as directed"), False),  # says nothing: not parenteral
    ],
)
def test_only_parenteral_orders_are_checked(order: dict[str, Any], checked: bool) -> None:
    expected = (["unchecked"], ["unchecked"]) if checked else ([], [])
    assert both(order) == expected


def test_every_row_is_parenteral_and_a_warning() -> None:
    for rule_id in (ACIDOSIS, SODIUM_RULE):
        rule = load_table()[rule_id]
        assert list(rule.drugs) == ["sodium-thiosulfate"]
        assert {row.route for row in rule.rows} == {"parenteral"}
        assert all(row.label is None for row in rule.rows)
        card = yaml.safe_load((DEFAULT_CARDS_DIR / f"{rule_id}.yaml").read_text(encoding="utf-8"))
        assert {v["indicator"] for v in card["variants"].values()} == {"warning"}
        assert "82f55408-2de9-463d-85e8-b39c3b259f0b" in card["source"]["label"]["en"]


def test_no_other_drug_is_checked() -> None:
    rxnorm_colchicine = medication(
        rid="c",
        medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "2683"}]},
        dosageInstruction=[{"text": "0.5 mg intravenously"}],
    )
    assert both(rxnorm_colchicine) == ([], [])


# ------------------------------------------------------------------------- wiring


def test_every_service_runs_both_rules_and_prefetches_the_labs() -> None:
    for service in yaml.safe_load(SERVICES_FILE.read_text(encoding="utf-8")):
        rules = _flatten(service["rules"])
        assert ACIDOSIS in rules, service["id"]
        assert SODIUM_RULE in rules, service["id"]
        assert rules.index(ACIDOSIS) < rules.index(SODIUM_RULE)
        observed = service["prefetch"]["observations"]["valuesets"]
        assert {"sodium", "bicarbonate"} <= set(observed), service["id"]
