"""Issue 14, point 11 (aluminium with citrate): an aluminium-containing order with an oral citrate
salt (calcium, potassium, sodium or magnesium citrate) is a warning: citrate raises the absorption
of aluminium, above all in renal impairment (Maalox 175/200 mg UK SmPC 4.5, emc product 2716).
Either order may be the one under review; an injection on either side gives no card; the salt
of another drug ("sildenafil citrate") is no citrate."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cds_service.hooks.services import SERVICES_FILE, _flatten
from cds_service.knowledge.safety import load_table
from cds_service.settings import DEFAULT_CARDS_DIR
from tests import helpers as h

RULE = "aluminium-citrate"
ALUMINIUM = "612"  # RxNorm aluminum hydroxide
POTASSIUM_CITRATE = "199381"  # potassium citrate 10 MEQ Extended Release Oral Tablet
UROCIT_K = "603281"  # ... [Urocit-K]
CALCIUM_CITRATE_D = "847121"  # Calcium Citrate 1500 MG / Cholecalciferol 250 UNT Oral Tablet


def named(text: str, rid: str) -> dict[str, Any]:
    return h.medication("active", rid, medicationCodeableConcept={"text": text})


def variants(*resources: dict[str, Any]) -> list[str]:
    return h.variants(RULE, h.patient(), h.egfr(80), *resources)


@pytest.mark.parametrize(
    "partner",
    [
        h.drug(POTASSIUM_CITRATE, rid="c"),
        h.drug(UROCIT_K, rid="c"),
        h.drug(CALCIUM_CITRATE_D, rid="c"),
        h.drug("A12AA13", rid="c", system=h.ATC),  # calcium citrate
        h.drug("A12BA02", rid="c", system=h.ATC),  # potassium citrate
        named("Citric acid / sodium citrate oral solution 30 mL", "c"),
        named("Calcium citrate 950 mg + vitamin D", "c"),
        named("citrate de potassium 1080 mg, comprimé", "c"),
        named("Magnesium citrate oral solution", "c"),
    ],
)
def test_aluminium_with_a_citrate_salt_is_a_warning(partner: dict[str, Any]) -> None:
    assert variants(h.drug(ALUMINIUM, rid="al"), partner) == ["interaction"]


@pytest.mark.parametrize(
    "partner",
    [
        named("sildenafil citrate 20 mg", "c"),
        named("tamoxifen citrate 20 mg tablet", "c"),
        h.drug("1897", rid="c"),  # calcium carbonate: no citrate
    ],
)
def test_other_drugs_citrate_salts_and_other_calcium_salts_are_silent(
    partner: dict[str, Any],
) -> None:
    assert variants(h.drug(ALUMINIUM, rid="al"), partner) == []


def test_an_injection_on_either_side_is_silent() -> None:
    iv = {**named("sodium citrate 4 % catheter lock", "c"), "dosageInstruction": [{"text": "IV"}]}
    assert variants(h.drug(ALUMINIUM, rid="al"), iv) == []


def test_one_finding_per_pair_whatever_the_salts() -> None:
    # Maalox (aluminium + magnesium) with calcium citrate: one pair, one finding
    assert variants(named("Maalox suspension", "al"), h.drug(CALCIUM_CITRATE_D, rid="c")) == [
        "interaction"
    ]


def test_the_rule_is_a_warning_wired_in_every_service_and_cites_the_smpc() -> None:
    rule = load_table()[RULE]
    assert rule.interaction
    assert rule.partners == ("citrate",)
    assert all(row.label is None for row in rule.rows)  # a warning: no critical row
    assert any("emc product 2716" in s for s in rule.sources)
    for service in yaml.safe_load(SERVICES_FILE.read_text(encoding="utf-8")):
        assert RULE in _flatten(service["rules"]), service["id"]
    card = yaml.safe_load((DEFAULT_CARDS_DIR / f"{RULE}.yaml").read_text(encoding="utf-8"))
    assert card["variants"]["interaction"]["indicator"] == "warning"
    assert card["source"]["url"] == "https://www.medicines.org.uk/emc/product/2716/smpc"
