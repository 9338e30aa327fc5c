"""Issue 14, bisphosphonates (second part): the oesophageal contraindication of oral
bisphosphonates (stricture, achalasia, dysmotility: critical), reflux and oesophagitis a
precaution, and never for the ibandronate injection (cds_service/knowledge/safety.yaml,
``bisphosphonate-oesophageal``; rules/predicates.py ``is_parenteral``)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.knowledge.chart import Chart
from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES
from tests.helpers import ATC, ICD10CM, RXNORM, condition, drug, egfr, patient, record

RULE = "bisphosphonate-oesophageal"
IBANDRONATE = "M05BA06"
ETIDRONATE = "M05BA01"
ALENDRONATE_RXNORM = "46041"


def variants(rec: Chart) -> list[str]:
    return [f.variant for f in RULES[RULE](rec)]


def chart(icd: str, order: dict[str, Any]) -> Chart:
    return record(patient(), condition(ICD10CM, icd), egfr(80), order)


def ibandronate(**dosage: Any) -> dict[str, Any]:
    res = drug(IBANDRONATE, system=ATC)
    if dosage:
        res["dosageInstruction"] = [dosage]
    return res


@pytest.mark.parametrize("icd", ["K22.2", "K22.0", "K22.4"])
def test_delayed_emptying_contraindicates_oral_bisphosphonates(icd: str) -> None:
    assert variants(chart(icd, drug(ALENDRONATE_RXNORM, system=RXNORM))) == ["contraindicated"]
    assert variants(chart(icd, drug(ETIDRONATE, system=ATC))) == ["contraindicated"]
    assert variants(chart(icd, ibandronate(text="150 mg once a month"))) == ["contraindicated"]


def test_reflux_stays_a_precaution() -> None:
    assert variants(chart("K21.9", drug(ALENDRONATE_RXNORM, system=RXNORM))) == ["caution"]
    assert variants(chart("K21.9", ibandronate())) == ["caution"]


@pytest.mark.parametrize(
    "dosage",
    [
        {"text": "3 mg intravenously every 3 months"},
        {"route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}]}},
        {"route": {"text": "injection IV"}},
    ],
)
def test_the_ibandronate_injection_never_fires(dosage: dict[str, Any]) -> None:
    assert variants(chart("K22.4", ibandronate(**dosage))) == []
    assert variants(chart("K21.9", ibandronate(**dosage))) == []


def test_an_oral_route_code_keeps_the_row() -> None:
    oral = {"route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]}}
    assert variants(chart("K22.0", ibandronate(**oral))) == ["contraindicated"]


def test_the_contraindication_row_names_its_label_and_route() -> None:
    rows = load_table()[RULE].rows
    assert rows[0].variant == "contraindicated"
    assert rows[0].route == "oral"
    assert "b63421af-ec03-1de7-e053-2a95a90abec6" in (rows[0].label or "")
    assert all(row.route == "oral" for row in rows)


def test_a_route_the_table_does_not_know_is_refused(tmp_path: Any) -> None:
    bad = tmp_path / "safety.yaml"
    bad.write_text(
        "rules:\n  r:\n    drugs: [alendronate]\n    sources: [s]\n    rows:\n"
        "      - {when: {condition: [oesophageal-disease]}, route: rectal, variant: caution}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="route"):
        load_table(bad)
