"""Rules at their thresholds (KDIGO categories, staleness, coded stages)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.cards import CardLibrary
from cds_service.knowledge.loader import thresholds
from cds_service.knowledge.safety import load_table
from cds_service.rules import MODULES, RULES, calcinosis_synthesis
from cds_service.settings import DEFAULT_CARDS_DIR
from cds_service.terminology import Terminology
from tests.conftest import NOW, ROOT, SERVICE_URL, load_request
from tests.helpers import (
    ATC,
    ICD10CM,
    SNOMED,
    condition,
    drug,
    egfr,
    medication,
    observation,
    patient,
    record,
)


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
        ((egfr(20, days_ago=500),), "stale"),  # not current data: a recheck warning
        ((), "unknown"),
    ],
    ids=["dialysis", "ckd5", "ckd3b", "unstaged", "stale-normal", "stale-low", "unknown"],
)
def test_aluminium_renal_situations(resources: tuple, variant: str) -> None:
    findings = RULES["aluminium-hydroxide-renal"](record(patient(), medication(), *resources))
    assert [f.variant for f in findings] == [variant]


def test_a_stale_low_result_is_a_recheck_warning_with_its_date(client: FlaskClient) -> None:
    # Issue 12: critical only on current data; an eGFR of 22 over 12 months old asks for a
    # new result instead of a contraindication.
    body = load_request("02-aluminium-egfr-22")
    for entry in body["prefetch"]["observations"]["entry"]:
        resource = entry["resource"]
        if resource["code"]["coding"][0]["code"] == "98979-8":
            resource["effectiveDateTime"] = "2025-01-10T09:30:00+01:00"
    card = client.post(SERVICE_URL, json=body).json["cards"][0]
    assert card["indicator"] == "warning"
    assert "2025-01-10" in card["summary"]
    assert "recheck eGFR" in card["summary"]
    assert "more than 12 months ago" in card["detail"]


def test_aluminium_one_finding_per_order_and_none_without_order() -> None:
    two = record(patient(), medication(rid="a"), medication(rid="b"), egfr(20))
    assert [f.facts["drug"].ref for f in RULES["aluminium-hydroxide-renal"](two)] == [
        "MedicationRequest/a",
        "MedicationRequest/b",
    ]
    assert RULES["aluminium-hydroxide-renal"](record(patient(), egfr(10))) == []


def test_calcinosis_synthesis_needs_calcinosis_and_something_to_act_on() -> None:
    ssc = condition(SNOMED, "89155008", rid="ssc")
    calc = condition(ICD10CM, "L94.2", rid="calc")
    (found,) = calcinosis_synthesis.evaluate(record(ssc, calc))  # no work-up at all
    assert (found.variant, found.facts["context"]) == ("workup", "systemic-sclerosis")
    assert calcinosis_synthesis.evaluate(record(ssc)) == []
    (alone,) = calcinosis_synthesis.evaluate(record(calc))
    assert alone.facts["context"] == "none"


def test_every_rule_documents_its_source() -> None:
    """Every rule of the registry says where it comes from: a calcinosis rule in its module's
    docstring (its seed, When / Then), a treatment-safety rule in its table row's sources; and
    the card file of every rule cites a source (a label in each language, a URL) and references."""
    modules = {module.RULE_ID: module for module in MODULES}
    table = load_table()
    assert sorted(RULES) == sorted([*modules, *table])  # each rule is one or the other
    library = CardLibrary(DEFAULT_CARDS_DIR, Terminology.load())
    for rule_id in RULES:
        if rule_id in modules:
            doc = modules[rule_id].__doc__ or ""
            for word in ("seed 00", "When", "Then"):
                assert word in doc, (rule_id, word)
        else:
            assert table[rule_id].sources, rule_id
            assert all(source.strip() for source in table[rule_id].sources), rule_id
        card = library.cards[rule_id].data
        for lang in ("en", "fr"):
            assert card["source"]["label"][lang].strip(), (rule_id, lang)
        assert card["source"]["url"].startswith(("https://", "http://")), rule_id
        assert card["references"], rule_id


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
    # The card names the check that failed by its card title.
    title = CardLibrary(DEFAULT_CARDS_DIR, Terminology.load()).cards["calcinosis-type"]
    assert f"“{title.data['title']['en']}” could not run" in failed["summary"]
    assert "rule calcinosis-type could not run: KeyError" in caplog.text
    assert "secret detail" not in caplog.text
    assert "fix-02" not in caplog.text


# --------------------------------------------------------------- severity (issue 12)

COLCHICINE, ALENDRONATE, RISEDRONATE, PROBENECID = "2683", "46041", "73056", "8698"
ZOLEDRONIC_ACID = ("M05BA08", ATC)


def _order(code: str | tuple[str, str]) -> dict[str, Any]:
    return drug(code[0], system=code[1]) if isinstance(code, tuple) else drug(code)


@pytest.mark.parametrize(
    ("rule", "order", "resources", "variant"),
    [
        # current low result: the label row
        ("colchicine-renal", COLCHICINE, (egfr(25),), "severe-renal"),
        ("bisphosphonate-renal", ALENDRONATE, (egfr(32),), "not-recommended"),
        ("bisphosphonate-renal", ZOLEDRONIC_ACID, (egfr(32),), "contraindicated"),
        ("probenecid-renal", PROBENECID, (egfr(30),), "ineffective"),
        # current normal result: silent
        ("colchicine-renal", COLCHICINE, (egfr(70),), None),
        ("bisphosphonate-renal", ZOLEDRONIC_ACID, (egfr(70),), None),
        ("probenecid-renal", PROBENECID, (egfr(70),), None),
        # stale result, normal or low: recheck (never silent, never critical)
        ("colchicine-renal", COLCHICINE, (egfr(70, days_ago=730),), "stale"),
        ("colchicine-renal", COLCHICINE, (egfr(20, days_ago=400),), "stale"),
        ("bisphosphonate-renal", ALENDRONATE, (egfr(70, days_ago=730),), "stale"),
        ("bisphosphonate-renal", ZOLEDRONIC_ACID, (egfr(20, days_ago=400),), "stale"),
        ("probenecid-renal", PROBENECID, (egfr(70, days_ago=730),), "stale"),
        # no renal data: unknown renal function
        ("colchicine-renal", COLCHICINE, (), "unknown"),
        ("bisphosphonate-renal", RISEDRONATE, (), "unknown"),
        ("bisphosphonate-renal", ZOLEDRONIC_ACID, (), "unknown"),
        ("probenecid-renal", PROBENECID, (), "unknown"),
        # a coded stage outweighs a stale result: current data again
        (
            "colchicine-renal",
            COLCHICINE,
            (egfr(70, days_ago=730), condition(ICD10CM, "N18.4", rid="ckd")),
            "severe-renal",
        ),
        (
            "bisphosphonate-renal",
            ZOLEDRONIC_ACID,
            (egfr(70, days_ago=730), condition(ICD10CM, "Z99.2", rid="hd")),
            "contraindicated",
        ),
    ],
)
def test_every_renal_row_handles_stale_and_unknown_renal_status(
    rule: str, order: Any, resources: tuple, variant: str | None
) -> None:
    findings = RULES[rule](record(patient(), _order(order), *resources))
    assert [f.variant for f in findings] == ([variant] if variant else [])


def test_colchicine_with_a_strong_inhibitor_is_critical_on_current_renal_data_only() -> None:
    # Ketoconazole (RxNorm 6135): a macrolide would be critical whatever the renal function
    # (French RCP, issue 14; tests/rules/test_colchicine_french_label.py).
    def variants(*resources: dict[str, Any]) -> list[str]:
        rec = record(patient(), drug(COLCHICINE, "c"), drug("6135", "k"), *resources)
        return [f.variant for f in RULES["colchicine-interaction"](rec)]

    assert variants(egfr(45)) == ["contraindicated"]
    assert variants(egfr(45, days_ago=500)) == ["interaction"]  # stale: not current
    assert variants() == ["interaction"]  # unknown: the renal rule asks for an eGFR
    assert variants(egfr(45, days_ago=500), condition(ICD10CM, "N18.32")) == ["contraindicated"]


def _hypotension(days_ago: int | None, recorded_days_ago: int | None = None) -> dict[str, Any]:
    res = condition(SNOMED, "45007003", rid="hypo")
    if days_ago is not None:
        res["onsetDateTime"] = (NOW - timedelta(days=days_ago)).date().isoformat()
    if recorded_days_ago is not None:
        res["recordedDate"] = (NOW - timedelta(days=recorded_days_ago)).date().isoformat()
    return res


def _systolic(value: float, days_ago: float) -> dict[str, Any]:
    return observation("8480-6", value, "mm[Hg]", days_ago, f"bp-{value}-{days_ago}")


@pytest.mark.parametrize(
    ("resources", "variant"),
    [
        # the patient: "Low blood pressure" coded in 2019, systolic 128 now
        ((_hypotension(2500, 2500), _systolic(128, 5)), None),
        ((_hypotension(2500, 2500),), None),  # older than the window, nothing since
        ((_hypotension(40),), "contraindicated"),  # current, not contradicted
        ((_hypotension(40), _systolic(85, 2)), "contraindicated"),
        ((_hypotension(40), _systolic(128, 10)), None),  # a newer normal reading
        ((_hypotension(40), _systolic(128, 60)), "contraindicated"),  # older than the entry
        ((_hypotension(2500, 20),), "contraindicated"),  # re-asserted (recorded) recently
        ((_hypotension(None),), "contraindicated"),  # undated: its age is unknown
        ((_hypotension(None), _systolic(120, 3)), None),  # undated, a recent normal reading
        ((_systolic(85, 2),), "low-reading"),  # one low reading: a warning
        ((_systolic(85, 45),), None),  # an old low reading
        ((_systolic(90, 2),), None),  # 90 is not below 90
        ((_hypotension(2500, 2500), _systolic(86, 3)), "low-reading"),
    ],
    ids=[
        "old-entry-normal-now",
        "old-entry",
        "current-entry",
        "current-entry-low-reading",
        "contradicted",
        "normal-reading-before-entry",
        "re-asserted",
        "undated",
        "undated-contradicted",
        "one-low-reading",
        "old-low-reading",
        "reading-at-limit",
        "old-entry-low-reading",
    ],
)
def test_ccb_hypotension_is_critical_only_for_a_current_uncontradicted_hypotension(
    resources: tuple, variant: str | None
) -> None:
    findings = RULES["ccb-hypotension"](record(patient(), drug("3443"), *resources))
    assert [f.variant for f in findings] == ([variant] if variant else [])


def test_the_hypotension_windows_come_from_thresholds() -> None:
    limits = thresholds()["ccb_hypotension"]
    rows = load_table()["ccb-hypotension"].rows
    current = rows[0].when["current_condition"]
    assert current["max_age_days"] == limits["condition_max_age_days"]
    assert current["unless_lab_at_least"]["value"] == limits["systolic_below"]
    assert rows[1].when["lab_below"]["max_age_days"] == limits["reading_max_age_days"]


def test_a_threshold_reference_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "safety.yaml"
    table.write_text(
        "rules:\n  r:\n    drugs: [diltiazem]\n    sources: [s]\n    rows:\n"
        "      - {when: {lab_below: {concept: systolic-bp, value: $nope.x, max_age_days: 1}},"
        " variant: v}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"\$nope\.x"):
        load_table.__wrapped__(table)


def _critical_rows() -> list[tuple[str, str, str | None]]:
    library = CardLibrary(DEFAULT_CARDS_DIR, Terminology.load())
    found = []
    for rule in load_table().values():
        variants = library.cards[rule.id].data["variants"]
        for row in rule.rows:
            if variants[row.variant]["indicator"] == "critical":
                found.append((rule.id, row.variant, row.label))
    return found


def test_every_critical_row_names_its_label_contraindication_and_is_listed() -> None:
    rows = _critical_rows()
    assert rows, "the table has critical rows"
    section = (ROOT / "docs" / "knowledge.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z-]+)` \| `([a-z-]+)` \|", section, re.MULTILINE))
    for rule, variant, label in rows:
        assert label, (rule, variant)
        assert re.search(r"label|RCP|SmPC", label), (rule, variant)
        assert (rule, variant) in listed, f"docs/knowledge.md does not list {rule} {variant}"
    assert listed == {(rule, variant) for rule, variant, _ in rows}


# --------------------------------------------------------------- one card per order (issue 12)


def test_safety_rules_stay_blind_to_each_other() -> None:
    """Each rule gives its own finding about the order; merging them into one card is the card
    set's (rules/card_set.py, tests/rules/test_card_set.py), never a rule's."""
    patient_record = record(
        patient(),
        egfr(20),
        drug("21212", rid="k"),
        drug(COLCHICINE, rid="c"),
        drug("3443", rid="d"),
    )
    findings = [
        f
        for rule in ("colchicine-renal", "colchicine-interaction")
        for f in RULES[rule](patient_record)
    ]
    assert sorted((f.rule, f.variant) for f in findings) == [
        ("colchicine-interaction", "contraindicated"),  # clarithromycin with eGFR 20
        ("colchicine-interaction", "interaction"),  # diltiazem
        ("colchicine-renal", "severe-renal"),
    ]
    assert {f.facts["drug"].ref for f in findings} == {"MedicationRequest/c"}
    assert all(f.also == () and not f.quiet_unless_changed for f in findings)
