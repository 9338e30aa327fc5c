"""Rules at their thresholds (KDIGO categories, staleness, coded stages)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from cds_service.knowledge.safety import load_table
from cds_service.rules import RULES, calcinosis_context
from tests.conftest import SERVICE_URL, load_request
from tests.helpers import ICD10CM, SNOMED, condition, egfr, medication, patient, record


@pytest.mark.parametrize(
    ("egfr_value", "variant"),
    [
        (10, "severe"),
        (29.9, "severe"),
        (30, "moderate"),
        (59.9, "moderate"),
        (60, None),
        (95, None),
    ],
)
def test_aluminium_thresholds(egfr_value: float, variant: str | None) -> None:
    findings = RULES["aluminium-hydroxide-renal"](record(patient(), medication(), egfr(egfr_value)))
    assert [f.variant for f in findings] == ([variant] if variant else [])


@pytest.mark.parametrize(
    ("resources", "variant"),
    [
        ((condition(ICD10CM, "Z99.2"), egfr(70)), "severe"),
        ((condition(SNOMED, "433146000"),), "severe"),
        ((condition(ICD10CM, "N18.32"),), "moderate"),
        ((condition(ICD10CM, "N19"),), "moderate"),
        ((egfr(85, days_ago=500),), "stale"),
        ((egfr(20, days_ago=500),), "severe"),
        ((), "unknown"),
    ],
    ids=["dialysis", "ckd5", "ckd3b", "unstaged", "stale-normal", "stale-low", "unknown"],
)
def test_aluminium_renal_situations(resources: tuple, variant: str) -> None:
    findings = RULES["aluminium-hydroxide-renal"](record(patient(), medication(), *resources))
    assert [f.variant for f in findings] == [variant]


def test_stale_severe_card_shows_the_date_of_the_old_result(client: FlaskClient) -> None:

    body = load_request("02-aluminium-egfr-22")
    for entry in body["prefetch"]["observations"]["entry"]:
        resource = entry["resource"]
        if resource["code"]["coding"][0]["code"] == "98979-8":
            resource["effectiveDateTime"] = "2025-01-10T09:30:00+01:00"
    card = client.post(SERVICE_URL, json=body).json["cards"][0]
    assert card["indicator"] == "critical"
    assert "2025-01-10" in card["summary"]
    assert "more than 12 months ago" in card["detail"]


def test_aluminium_one_finding_per_order_and_none_without_order() -> None:
    two = record(patient(), medication(rid="a"), medication(rid="b"), egfr(20))
    assert [f.facts["drug"].ref for f in RULES["aluminium-hydroxide-renal"](two)] == [
        "MedicationRequest/a",
        "MedicationRequest/b",
    ]
    assert RULES["aluminium-hydroxide-renal"](record(patient(), egfr(10))) == []


def test_calcinosis_context_needs_both_conditions() -> None:
    ssc = condition(SNOMED, "89155008", rid="ssc")
    calc = condition(ICD10CM, "L94.2", rid="calc")
    assert [f.variant for f in calcinosis_context.evaluate(record(ssc, calc))] == ["management"]
    assert calcinosis_context.evaluate(record(ssc)) == []
    assert calcinosis_context.evaluate(record(calc)) == []


def test_every_rule_documents_its_source() -> None:
    for module in (calcinosis_context,):
        doc = module.__doc__ or ""
        assert "seed 00" in doc
        assert "When" in doc
    for rule in load_table().values():
        assert rule.sources
    assert "aluminium-hydroxide-renal" in RULES


def test_a_failing_rule_does_not_silence_the_others(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(record: object) -> list:
        raise KeyError("fix-02 secret detail")  # a message that must not reach the logs

    monkeypatch.setitem(RULES, "calcinosis-type", broken)
    response = client.post(SERVICE_URL, json=load_request("02-aluminium-egfr-22"))
    assert response.status_code == 200
    codes = [c["source"]["topic"]["code"] for c in response.json["cards"]]
    assert "aluminium-hydroxide-renal" in codes  # the other rules still ran
    assert "calcinosis-type" not in codes
    failed = next(
        c for c in response.json["cards"] if c["source"]["topic"]["code"] == "check-failed"
    )
    assert failed["indicator"] == "info"
    assert "Calcinosis type" in failed["summary"] or "calcinosis" in failed["summary"].lower()
    assert "rule calcinosis-type could not run: KeyError" in caplog.text
    assert "secret detail" not in caplog.text
    assert "fix-02" not in caplog.text
