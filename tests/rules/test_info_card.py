"""One calcinosis info card per patient-view response, and none when nothing is actionable
(issue 12, point 2; docs/knowledge.md, "Card set")."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cds_service.cards import CardLibrary, Renderer
from cds_service.fhir.record import Located
from cds_service.knowledge.chart import build_chart
from cds_service.rules import RULES, Finding, info_card
from cds_service.settings import DEFAULT_CARDS_DIR, Settings, SettingsError
from tests import helpers as h
from tests.conftest import (
    FIXTURE_ROOT,
    NOW,
    ROOT,
    SERVICE_URL,
    app_with,
    load_request,
)

SYNTHESIS = "calcinosis-synthesis"
SUPPLEMENT = "calcium-vitamin-d-calcinosis"
RISK = "calcinosis-risk-screening"
RENDERER = Renderer(CardLibrary(DEFAULT_CARDS_DIR, h.TERMINOLOGY))


def rules_of(cards: list[dict[str, Any]]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in cards]


def calcinosis() -> dict[str, Any]:
    return h.condition(h.ICD10CM, "L94.2", rid="c")


def ssc() -> dict[str, Any]:
    return h.condition(h.SNOMED, "89155008", rid="s")


WORKUP_DONE = (
    h.observation("17861-6", 9.4, "mg/dL", 20, "ca"),
    h.observation("2777-1", 3.5, "mg/dL", 20, "p"),
    h.observation("2731-8", 42, "pg/mL", 20, "pth"),
    h.observation("1989-3", 32, "ng/mL", 20, "vitd"),
    h.egfr(90, days_ago=20),
)


# --------------------------------------------------------------------------- the rule


def test_complete_work_up_and_no_lesion_feature_give_no_card() -> None:
    assert RULES[SYNTHESIS](h.record(h.patient(), ssc(), calcinosis(), *WORKUP_DONE)) == []


@pytest.mark.parametrize(
    ("extra", "variant"),
    [
        ((), "workup"),
        ((h.condition(h.SNOMED, "266261006", rid="r"), *WORKUP_DONE), "steps"),
        ((h.condition(h.SNOMED, "266261006", rid="r"),), "steps-workup"),
    ],
)
def test_the_variant_says_what_there_is_to_act_on(extra: tuple[Any, ...], variant: str) -> None:
    (finding,) = RULES[SYNTHESIS](h.record(h.patient(), ssc(), calcinosis(), *extra))
    assert finding.variant == variant


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_one_card_holds_context_work_up_and_steps(lang: str) -> None:
    rec = h.record(
        h.patient(),
        ssc(),
        {**calcinosis(), "note": [{"text": "Calcinose inflammatoire"}]},
        h.egfr(90, days_ago=20),
    )
    (finding,) = RULES[SYNTHESIS](rec)
    card = RENDERER.render(finding, lang, h.PID)
    detail = card["detail"]
    assert ("systemic sclerosis" if lang == "en" else "sclérodermie systémique") in detail
    assert ("**Complete the work-up**" if lang == "en" else "**Compléter le bilan**") in detail
    assert ("**Inflammatory lesion**" if lang == "en" else "**Lésion inflammatoire**") in detail
    kinds = [a["resource"]["resourceType"] for s in card["suggestions"] for a in s["actions"]]
    assert kinds.count("ServiceRequest") == 4  # calcium, phosphate, PTH, vitamin D
    assert kinds.count("MedicationRequest") == 2  # colchicine, minocycline
    # The background reading is behind the links, not on the card.
    assert [link["url"] for link in card["links"]] == [
        "https://www.sclerodermamanitoba.com",
        "https://pubmed.ncbi.nlm.nih.gov/28846311/",
    ]
    assert "case series" in detail or "séries de cas" in detail


# --------------------------------------------------------------------------- the composition


def _supplement_finding() -> Finding:
    rec = h.record(h.patient(), h.drug("2418", "vd"), calcinosis())
    (finding,) = RULES[SUPPLEMENT](rec)
    return finding


def test_a_supplement_becomes_a_step_of_the_synthesis_card() -> None:
    (synthesis,) = RULES[SYNTHESIS](h.record(h.patient(), ssc(), calcinosis()))
    supplement = _supplement_finding()
    (merged,) = info_card.compose("patient-view", [synthesis, supplement])
    assert merged.rule == SYNTHESIS
    assert merged.variant == "steps-workup"  # the work-up, and now a step
    assert merged.facts["features"] == ["supplement"]
    assert supplement.facts["drug"] in merged.evidence
    for lang, step in (("en", "**Calcium or vitamin D supplement**"), ("fr", "**Supplémentation")):
        card = RENDERER.render(merged, lang, h.PID)
        assert step in card["detail"]
        assert "ordered as" in card["detail"] or "prescrit sous le libellé" in card["detail"]


def test_without_a_synthesis_card_the_supplement_card_stays() -> None:
    supplement = _supplement_finding()
    assert info_card.compose("patient-view", [supplement]) == [supplement]
    (synthesis,) = RULES[SYNTHESIS](h.record(h.patient(), ssc(), calcinosis()))
    both = [synthesis, supplement]
    assert info_card.compose("order-select", both) == both  # only patient-view composes


def test_risk_screening_is_never_beside_the_synthesis_card() -> None:
    (synthesis,) = RULES[SYNTHESIS](h.record(h.patient(), ssc(), calcinosis()))
    risk = Finding(RISK, "risk-factors", facts={"factors": [("male-sex", {})]})
    assert info_card.compose("patient-view", [risk, synthesis]) == [synthesis]
    assert info_card.compose("patient-view", [risk]) == [risk]


def test_the_service_folds_the_supplement_in(tmp_path: Path) -> None:
    with app_with(tmp_path) as app:
        body = app.test_client().post(
            SERVICE_URL, json=load_request("19-juvenile-dm-calcinosis-cholecalciferol")
        )
    cards = body.json["cards"]
    assert rules_of(cards) == [SYNTHESIS]
    assert "**Calcium or vitamin D supplement**" in cards[0]["detail"]
    assert "dermatomyositis" in cards[0]["detail"]


@pytest.mark.parametrize(
    "name", ["18-lupus-calcinosis-complete-workup", "43-ssc-calcinosis-lesion-3-mm"]
)
def test_nothing_actionable_gives_no_card(tmp_path: Path, name: str) -> None:
    with app_with(tmp_path) as app:
        response = app.test_client().post(SERVICE_URL, json=load_request(name))
    assert response.json == {"cards": []}


# --------------------------------------------------------------------------- once a year


def _risk_patient_at(app: Any, when: datetime, name: str = "24-ssc-osteoporosis-alendronate-gerd"):
    CLOCK["now"] = when
    return rules_of(app.test_client().post(SERVICE_URL, json=load_request(name)).json["cards"])


CLOCK = {"now": NOW}


def test_risk_screening_is_shown_at_most_once_a_year_per_patient(tmp_path: Path) -> None:
    with app_with(tmp_path, clock=lambda: CLOCK["now"]) as app:
        assert RISK in _risk_patient_at(app, NOW)
        later = _risk_patient_at(app, NOW + timedelta(days=200))
        assert RISK not in later
        assert "bisphosphonate-oesophageal" in later  # the other cards are still shown
        # Another patient is not affected by this one's card.
        assert RISK in _risk_patient_at(
            app, NOW + timedelta(days=200), "25-ssc-ild-risedronate-egfr-32"
        )
        assert RISK not in _risk_patient_at(app, NOW + timedelta(days=364))
        assert RISK in _risk_patient_at(app, NOW + timedelta(days=366))
        assert RISK not in _risk_patient_at(app, NOW + timedelta(days=367))


def test_the_risk_screening_interval_is_a_setting(tmp_path: Path) -> None:
    with app_with(tmp_path, clock=lambda: CLOCK["now"], risk_screening_interval_days=30) as app:
        assert RISK in _risk_patient_at(app, NOW)
        assert RISK not in _risk_patient_at(app, NOW + timedelta(days=29))
        assert RISK in _risk_patient_at(app, NOW + timedelta(days=31))
    with app_with(tmp_path / "every", risk_screening_interval_days=0) as app:
        client = app.test_client()
        for _ in range(2):
            cards = client.post(SERVICE_URL, json=load_request("25-ssc-ild-risedronate-egfr-32"))
            assert RISK in rules_of(cards.json["cards"])
    env = Settings.from_env({"CDS_RISK_SCREENING_INTERVAL_DAYS": "90"})
    assert env.risk_screening_interval_days == 90
    with pytest.raises(SettingsError, match="CDS_RISK_SCREENING_INTERVAL_DAYS"):
        Settings.from_env({"CDS_RISK_SCREENING_INTERVAL_DAYS": "-1"})


# --------------------------------------------------------------------------- acceptance


def _resources(request: dict[str, Any], expected: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(expected.get("server", ()))
    pages = list((expected.get("pages") or {}).values())
    for value in [*(request.get("prefetch") or {}).values(), *pages]:
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            found += [e["resource"] for e in value.get("entry") or () if "resource" in e]
        elif isinstance(value, dict):
            found.append(value)
    return found


def patient_view_outcomes() -> list[tuple[str, bool, list[dict[str, Any]]]]:
    """Every patient-view fixture (generated and field): its name, whether the patient has SSc
    and calcinosis, and its expected cards (checked against the service by test_fixtures.py and
    test_field_fixtures.py)."""
    outcomes = []
    for folder in (FIXTURE_ROOT / "patient-view", ROOT / "fixtures" / "field" / "patient-view"):
        for path in sorted(folder.glob("*.expected.json")):
            expected = json.loads(path.read_text(encoding="utf-8"))
            request_path = path.with_name(path.name.replace(".expected.", ".request."))
            request = json.loads(request_path.read_text(encoding="utf-8"))
            located = [Located(f"f[{i}]", r) for i, r in enumerate(_resources(request, expected))]
            now = datetime.fromisoformat(f"{expected['asOf']}T12:00:00+00:00")
            record = build_chart(located, request["context"]["patientId"], h.TERMINOLOGY, now)
            ssc_calcinosis = bool(
                record.conditions_in("systemic-sclerosis") and record.conditions_in("calcinosis")
            )
            outcomes.append((path.name, ssc_calcinosis, expected["cards"]))
    return outcomes


def test_at_most_one_info_card_per_patient_view_response() -> None:
    for name, _ssc, cards in patient_view_outcomes():
        info = [c["rule"] for c in cards if c["indicator"] == "info"]
        assert len(info) <= 1, (name, info)


def test_few_cards_per_ssc_calcinosis_patient() -> None:
    counted = [cards for _name, ssc_calcinosis, cards in patient_view_outcomes() if ssc_calcinosis]
    assert len(counted) >= 30
    assert sum(len(cards) for cards in counted) / len(counted) <= 1.5
    for cards in counted:
        rules = {c["rule"] for c in cards}
        assert not {SYNTHESIS, SUPPLEMENT} <= rules, "the supplement is a step of the synthesis"
