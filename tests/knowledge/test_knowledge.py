"""Consistency of the knowledge files: cards <-> rules <-> value sets, in both languages."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from cds_service.cards import SUMMARY_MAX, CardContentError, CardLibrary, Renderer, md_escape
from cds_service.devtools.hookrequest import resources_of
from cds_service.fhir.record import DataNote, Located
from cds_service.hooks.call import draft_orders
from cds_service.knowledge.chart import Chart, build_chart
from cds_service.knowledge.safety import load_table, table_valuesets
from cds_service.rules import CHECK_FAILED, RULES, SERVICE_CARDS, Finding
from cds_service.settings import DEFAULT_CARDS_DIR
from cds_service.terminology import VALUESET_DIR, Terminology, TerminologyError
from tests.conftest import (
    FIXTURES,
    NOW,
    SERVICES,
    assert_valid_response,
    fixture_names,
    load_expected,
    load_request,
)
from tests.helpers import (
    ATC,
    ICD10CM,
    SNOMED,
    antibody,
    condition,
    creatinine,
    drug,
    egfr,
    medication,
    observation,
    patient,
    record,
)

TERMINOLOGY = Terminology.load()
LIBRARY = CardLibrary(DEFAULT_CARDS_DIR, TERMINOLOGY)
RENDERER = Renderer(LIBRARY)

# A complete, normal calcinosis work-up (calcium, phosphate, PTH, 25-OH vitamin D, eGFR).
WORKUP_DONE = (
    observation("17861-6", 9.4, "mg/dL", 20, "ca"),
    observation("2777-1", 3.5, "mg/dL", 20, "p"),
    observation("2731-8", 42, "pg/mL", 20, "pth"),
    observation("1989-3", 32, "ng/mL", 20, "vitd"),
    egfr(90, days_ago=20),
)

# One record per variant, so every card text is rendered with real facts.
VARIANT_RECORDS = {
    ("aluminium-hydroxide-renal", "severe"): [
        record(patient(), medication(), creatinine(3.1)),
        record(patient(), medication(), condition(ICD10CM, "Z99.2")),
        record(patient(), medication(), condition(SNOMED, "431857002")),
    ],
    ("aluminium-hydroxide-renal", "moderate"): [
        record(patient(), medication(), egfr(44)),
        record(patient(), medication(), condition(ICD10CM, "N19")),
    ],
    ("aluminium-hydroxide-renal", "stale"): [
        record(patient(), medication(), egfr(70, days_ago=900))
    ],
    ("aluminium-hydroxide-renal", "unknown"): [
        record(patient(), medication()),
        record(patient(gender=None), medication(), creatinine(2.0)),
    ],
    ("calcinosis-synthesis", "steps-workup"): [
        record(condition(ICD10CM, "L94.2", rid="c"), condition(SNOMED, "266261006", rid="r")),
        record(
            condition(SNOMED, "89155008", rid="s"),
            {**condition(ICD10CM, "L94.2", rid="c"), "note": [{"text": "Calcinose inflammatoire"}]},
            {
                **observation("39126-8", 1.5, "mm", 3, "size"),
                "focus": [{"reference": "Condition/c"}],
            },
        ),
    ],
    ("calcinosis-synthesis", "steps"): [
        record(
            patient(),
            condition(SNOMED, "89155008", rid="s"),
            condition(ICD10CM, "L94.2", rid="c"),
            condition(SNOMED, "266261006", rid="r"),
            *WORKUP_DONE,
        ),
        record(
            patient(),
            condition(SNOMED, "396230008", rid="d"),
            condition(ICD10CM, "L94.2", rid="c"),
            {
                **observation("39125-0", 1.2, "cm", 3, "size"),
                "focus": [{"reference": "Condition/c"}],
            },
            *WORKUP_DONE,
        ),
    ],
    ("calcinosis-synthesis", "workup"): [
        record(condition(SNOMED, "89155008", rid="s"), condition(ICD10CM, "L94.2", rid="c")),
        record(condition(SNOMED, "396230008", rid="d"), condition(ICD10CM, "L94.2", rid="c")),
        record(condition(SNOMED, "55464009", rid="l"), condition(ICD10CM, "L94.2", rid="c")),
        record(patient(), condition(ICD10CM, "L94.2")),
    ],
    ("calcinosis-risk-screening", "risk-factors"): [
        record(patient("male"), condition(SNOMED, "89155008")),
        record(patient(), condition(SNOMED, "89155008"), antibody("31290-0", "Positive")),
    ],
    ("calcinosis-type", "metastatic"): [
        record(
            patient(),
            condition(ICD10CM, "L94.2"),
            observation("17861-6", 11.6, "mg/dL", 5, "ca", high=10.2, flags=("H",)),
            observation("2777-1", 6.5, "mg/dL", 5, "p", high=4.5),
        )
    ],
    ("calcinosis-type", "dialysis"): [
        record(
            patient(), condition(ICD10CM, "L94.2", rid="c"), condition(ICD10CM, "Z99.2", rid="d")
        )
    ],
    ("colchicine-renal", "severe-renal"): [record(patient(), drug("2683"), egfr(25))],
    ("colchicine-renal", "stale"): [record(patient(), drug("2683"), egfr(70, days_ago=730))],
    ("colchicine-renal", "unknown"): [record(patient(), drug("2683"))],
    ("colchicine-interaction", "interaction"): [
        record(patient(), drug("2683", "c"), drug("3443", "d"), egfr(80)),
        record(patient(), drug("2683", "c"), drug("3443", "d"), egfr(40)),  # moderate: no CI
    ],
    ("colchicine-interaction", "contraindicated"): [
        record(patient(), drug("2683", "c"), drug("21212", "k"), egfr(45)),
        record(patient(), drug("2683", "c"), drug("3008", "k"), condition(SNOMED, "59927004")),
    ],
    ("bisphosphonate-renal", "not-recommended"): [record(patient(), drug("46041"), egfr(32))],
    ("bisphosphonate-renal", "contraindicated"): [
        record(patient(), drug("M05BA08", system=ATC), egfr(32))
    ],
    ("bisphosphonate-renal", "stale"): [
        record(patient(), drug("46041"), egfr(70, days_ago=730)),
        record(patient(), drug("M05BA08", system=ATC), egfr(20, days_ago=400)),
    ],
    ("bisphosphonate-renal", "unknown"): [
        record(patient(), drug("46041")),
        record(patient(), drug("M05BA08", system=ATC)),
    ],
    ("bisphosphonate-oesophageal", "caution"): [
        record(patient(), drug("46041"), condition(SNOMED, "235595009"), egfr(80))
    ],
    ("probenecid-renal", "ineffective"): [record(patient(), drug("8698"), egfr(30))],
    ("probenecid-renal", "stale"): [record(patient(), drug("8698"), egfr(70, days_ago=730))],
    ("probenecid-renal", "unknown"): [record(patient(), drug("8698"))],
    ("probenecid-nephrolithiasis", "caution"): [
        record(patient(), drug("8698"), condition(SNOMED, "95570007"), egfr(80))
    ],
    ("ccb-hypotension", "contraindicated"): [
        record(patient(), drug("11170"), condition(SNOMED, "45007003")),
        record(
            patient(),
            drug("3443"),
            condition(SNOMED, "45007003"),
            observation("8480-6", 85, "mm[Hg]", 2, "bp"),
        ),
    ],
    ("ccb-hypotension", "low-reading"): [
        record(patient(), drug("3443"), observation("8480-6", 85, "mm[Hg]", 2, "bp")),
    ],
    ("ccb-av-block", "contraindicated"): [
        record(patient(), drug("11170"), condition(SNOMED, "195042002"))
    ],
    ("warfarin-minocycline", "interaction"): [
        record(patient(), drug("11289", "w"), drug("6980", "m"))
    ],
    ("calcium-vitamin-d-calcinosis", "review"): [
        record(patient(), drug("1897"), condition(ICD10CM, "L94.2")),
        record(patient(), drug("2418"), condition(ICD10CM, "L94.2")),
    ],
}


# Every variant the card files declare (the service's own cards are tested below).
DECLARED = {
    (rule, v)
    for rule, card in LIBRARY.cards.items()
    if rule not in SERVICE_CARDS
    for v in card.data["variants"]
}


def fixture_chart(hook: str, name: str) -> Chart:
    """The chart the service builds for a fixture request (its drafts under review included)."""
    request = load_request(name, hook)
    resources = [r for value in request["prefetch"].values() if value for r in resources_of(value)]
    located = [Located(f"prefetch.entry[{i}]", r) for i, r in enumerate(resources)]
    drafts = None
    if "draftOrders" in request["context"]:
        drafts = [Located(d.path, d.resource) for d in draft_orders(request["context"])]
    return build_chart(located, request["context"]["patientId"], TERMINOLOGY, NOW, drafts)


def fixture_records(missing: set[tuple[str, str]]) -> dict[tuple[str, str], list[Chart]]:
    """For each (rule, variant) of `missing` that is a treatment-safety rule's, the charts of
    the fixtures whose expected cards lead with it: a rule added as a table row and a card
    file needs no record here, its fixtures (required anyway) stand for it. (A calcinosis
    rule's card may be recomposed from several findings, so its records are written above.)"""
    table = load_table()
    found: dict[tuple[str, str], list[Chart]] = {}
    for hook in SERVICES:
        for name in fixture_names(hook):
            for card in load_expected(name, hook)["cards"]:
                key = (card["rule"], card["variant"])
                if key in missing and key[0] in table:
                    found.setdefault(key, []).append(fixture_chart(hook, name))
    return found


# The records of every declared variant: written above, else taken from the fixtures.
ALL_RECORDS = {**fixture_records(DECLARED - set(VARIANT_RECORDS)), **VARIANT_RECORDS}


def test_every_card_file_names_an_existing_rule_and_every_rule_has_one() -> None:
    assert set(LIBRARY.cards) == set(RULES) | set(SERVICE_CARDS)


def test_every_variant_has_a_record_that_produces_it() -> None:
    assert set(VARIANT_RECORDS) <= DECLARED
    assert set(ALL_RECORDS) == DECLARED, "a variant with no record and no fixture"
    for (rule, variant), records in ALL_RECORDS.items():
        for rec in records:
            produced = [f.variant for f in RULES[rule](rec)]
            if (rule, variant) in VARIANT_RECORDS:
                assert produced == [variant], (rule, variant)
            else:  # a fixture may hold several orders of the rule's drugs
                assert variant in produced, (rule, variant)


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize(("rule", "variant"), sorted(ALL_RECORDS))
def test_every_variant_renders_valid_cards_in_both_languages(
    rule: str, variant: str, lang: str
) -> None:
    for rec in ALL_RECORDS[(rule, variant)]:
        for finding in RULES[rule](rec):
            card = RENDERER.render(finding, lang, "p1")
            assert_valid_response({"cards": [card]})
            assert len(card["summary"]) <= SUMMARY_MAX
            assert "{" not in card["summary"], "unfilled placeholder"
            assert "{" not in card["detail"], "unfilled placeholder"
            assert card["source"]["topic"]["code"] == rule
            assert LIBRARY.version in card["detail"]
            assert "\n\n" in card["detail"]  # evidence and evidence level are separate sections


def test_french_and_english_texts_differ() -> None:
    for card in LIBRARY.cards.values():
        for variant in card.data["variants"].values():
            assert variant["summary"]["en"] != variant["summary"]["fr"]
            assert variant["detail"]["en"] != variant["detail"]["fr"]


def test_suggestions_carry_fhir_actions_on_the_right_resources() -> None:
    rec = record(patient(), medication(rid="alu-1"), egfr(22))
    card = RENDERER.render(RULES["aluminium-hydroxide-renal"](rec)[0], "en", "p1")
    assert card["selectionBehavior"] == "any"
    stop, order = card["suggestions"]
    assert stop["isRecommended"] is True
    update = stop["actions"][0]
    assert (update["type"], update["resource"]["id"], update["resource"]["status"]) == (
        "update",
        "alu-1",
        "stopped",
    )
    create = order["actions"][0]
    assert create["type"] == "create"
    assert create["resource"]["resourceType"] == "ServiceRequest"
    assert create["resource"]["subject"] == {"reference": "Patient/p1"}
    assert create["resource"]["code"]["coding"][0]["code"] == "2160-0"
    assert {s["uuid"] for s in card["suggestions"]} != {None}
    assert card["overrideReasons"][0]["code"] == "benefit-outweighs-risk"
    # The original resource in the record is not modified by building the suggestion.
    assert rec.medications[0].resource["status"] == "active"


def test_ehr_text_cannot_inject_markup() -> None:
    evil = "<script>alert(1)</script> [click](javascript:alert(2)) **bold**"
    rec = record(
        patient(),
        medication(medicationCodeableConcept={"text": f"aluminium hydroxide {evil}"}),
        egfr(20),
    )
    card = RENDERER.render(RULES["aluminium-hydroxide-renal"](rec)[0], "en", "p1")
    assert "<script>" not in card["detail"]
    assert "](javascript:" not in card["detail"]
    assert "\\<script\\>" in card["detail"]
    assert md_escape("a_b*c") == "a\\_b\\*c"


def test_unit_notes_appear_as_evidence() -> None:
    rec = record(patient(), medication(), creatinine(1.9, "mg%"))
    assert isinstance(rec.notes[0], DataNote)
    card = RENDERER.render(RULES["aluminium-hydroxide-renal"](rec)[0], "fr", "p1")
    assert "Non interprété" in card["detail"]
    assert "mg%" in card["detail"]


def test_numbers_and_dates_follow_the_language() -> None:
    rec = record(patient(), medication(), creatinine(190, "umol/L", days_ago=15))
    finding = RULES["aluminium-hydroxide-renal"](rec)[0]
    en = RENDERER.render(finding, "en", "p1")["detail"]
    fr = RENDERER.render(finding, "fr", "p1")["detail"]
    day = NOW.date() - timedelta(days=15)
    assert day.isoformat() in en
    assert "2.15 mg/dL" in en
    assert day.strftime("%d/%m/%Y") in fr
    assert "190 µmol/L" in fr  # creatinine in the French laboratories' unit
    assert "mg/dL" not in fr


def test_card_library_rejects_incomplete_content(tmp_path: Path) -> None:
    (tmp_path / "_common.yaml").write_text((DEFAULT_CARDS_DIR / "_common.yaml").read_text())
    data = yaml.safe_load((DEFAULT_CARDS_DIR / "calcinosis-synthesis.yaml").read_text())
    del data["variants"]["workup"]["summary"]["fr"]
    (tmp_path / "calcinosis-synthesis.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(CardContentError, match="summary"):
        CardLibrary(tmp_path, TERMINOLOGY)
    data = yaml.safe_load((DEFAULT_CARDS_DIR / "calcinosis-synthesis.yaml").read_text())
    del data["context"]["dermatomyositis"]["fr"]
    (tmp_path / "calcinosis-synthesis.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(CardContentError, match=r"context\.dermatomyositis"):
        CardLibrary(tmp_path, TERMINOLOGY)


def test_every_code_in_a_value_set_says_where_it_was_verified() -> None:
    for vs in TERMINOLOGY.valuesets.values():
        assert vs.concepts or vs.phrases
        for concept in vs.concepts:
            assert len(concept.source) > 10, (vs.id, concept.code)
            assert concept.display


def test_rule_and_card_value_sets_exist() -> None:
    for name in (
        "systemic-sclerosis",
        "calcinosis",
        "aluminium-hydroxide",
        "egfr",
        "creatinine",
        "dialysis",
        "ckd-stage-3",
        "ckd-stage-4",
        "ckd-stage-5",
        "renal-insufficiency-unstaged",
        "renal-function-order",
    ):
        assert name in TERMINOLOGY.valuesets


def test_value_set_file_errors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(
        "id: other\ntitle: {en: x, fr: x}\napplies_to: Condition\ndescription: x\ntext: [x]\n"
    )
    with pytest.raises(TerminologyError, match="file name"):
        Terminology.load(tmp_path)


def test_fixture_codes_are_in_value_sets_or_known_noise() -> None:
    noise = {"8867-4", "2823-3", "8480-6", "17861-6", "2777-1", "266261006", "3443"}
    # ICD-10-CM E83.59, too broad for any value set: calciphylaxis is recognised by its text.
    noise.add("E83.59")
    known = {c.code for vs in TERMINOLOGY.valuesets.values() for c in vs.concepts}
    for path in FIXTURES.parent.glob("*/*.request.json"):  # all three services
        text = path.read_text(encoding="utf-8")
        for bundle in json.loads(text)["prefetch"].values():
            for entry in (bundle or {}).get("entry", []):
                res = entry["resource"]
                concept = res.get("code") or res.get("medicationCodeableConcept") or {}
                for coding in concept.get("coding", []):
                    assert coding["code"] in known | noise, (path.name, coding)
        context = json.loads(text)["context"]
        for entry in context.get("draftOrders", {}).get("entry", []):
            for coding in entry["resource"]["medicationCodeableConcept"].get("coding", []):
                assert coding["code"] in known | noise, (path.name, coding)


def test_valueset_dir_has_one_file_per_value_set() -> None:
    assert {p.stem for p in VALUESET_DIR.glob("*.yaml")} == set(TERMINOLOGY.valuesets)


def test_unknown_renal_status_says_why() -> None:
    no_sex = record(patient(gender=None), medication(), creatinine(2.0))
    card = RENDERER.render(RULES["aluminium-hydroxide-renal"](no_sex)[0], "en", "p1")
    assert "eGFR cannot be computed" in card["detail"]
    nothing = record(patient(), medication())
    card = RENDERER.render(RULES["aluminium-hydroxide-renal"](nothing)[0], "en", "p1")
    assert "no eGFR, creatinine or coded renal condition" in card["detail"]


def test_french_typography_before_colons() -> None:
    rec = record(patient(), medication(), egfr(22))
    fr = RENDERER.render(RULES["aluminium-hydroxide-renal"](rec)[0], "fr", "p1")["detail"]
    en = RENDERER.render(RULES["aluminium-hydroxide-renal"](rec)[0], "en", "p1")["detail"]
    assert "**Niveau de preuve** : " in fr
    assert "**Evidence level**: " in en


def test_unreadable_unit_is_said_on_the_workup_card() -> None:
    rec = record(
        patient(),
        condition(ICD10CM, "L94.2"),
        observation("17861-6", 2.4, "U/L", 10, "ca-odd"),  # not a unit the service reads
    )
    card = RENDERER.render(RULES["calcinosis-synthesis"](rec)[0], "en", "p1")
    assert "Not interpreted" in card["detail"]
    assert "U/L" in card["detail"]


def test_rule_catalogue_lists_every_rule() -> None:
    catalogue = (DEFAULT_CARDS_DIR.parent / "docs" / "knowledge.md").read_text(encoding="utf-8")
    for rule in RULES:
        assert f"`{rule}`" in catalogue, rule


def test_safety_table_names_only_existing_value_sets() -> None:
    assert table_valuesets() <= set(TERMINOLOGY.valuesets)


def test_lesion_suggestions_follow_the_features_found() -> None:
    inflamed_small = VARIANT_RECORDS[("calcinosis-synthesis", "steps-workup")][1]
    card = RENDERER.render(RULES["calcinosis-synthesis"](inflamed_small)[0], "fr", "p1")
    proposed = [
        a["resource"]["medicationCodeableConcept"]["text"]
        for s in card["suggestions"]
        for a in s["actions"]
        if a["resource"]["resourceType"] == "MedicationRequest"
    ]
    assert proposed == ["thiosulfate de sodium", "colchicine", "minocycline"]
    assert "**Lésion de moins de 2 mm**" in card["detail"]
    assert "**Lésion inflammatoire**" in card["detail"]
    assert "chirurgien" not in card["detail"]  # not disabling: no surgical step or referral
    raynaud_only = VARIANT_RECORDS[("calcinosis-synthesis", "steps")][0]
    card = RENDERER.render(RULES["calcinosis-synthesis"](raynaud_only)[0], "en", "p1")
    assert "suggestions" not in card  # Raynaud's step has none, and the work-up is complete
    assert_valid_response({"cards": [card]})


@pytest.mark.parametrize(
    ("size", "unit", "feature"),
    [(1.5, "mm", "small"), (0.15, "cm", "small"), (3, "mm", None), (1.2, "cm", "large")],
)
def test_lesion_size_thresholds(size: float, unit: str, feature: str | None) -> None:
    from cds_service.rules.calcinosis_lesion import lesion_features

    rec = record(
        condition(ICD10CM, "L94.2", rid="c"),
        {**observation("39126-8", size, unit, 3, "size"), "focus": [{"reference": "Condition/c"}]},
    )
    assert lesion_features(rec)[0] == ([feature] if feature else [])


def test_lesion_size_needs_a_focus_on_the_calcinosis() -> None:
    from cds_service.rules.calcinosis_lesion import lesion_features

    rec = record(condition(ICD10CM, "L94.2", rid="c"), observation("39126-8", 1.0, "mm", 3, "size"))
    assert lesion_features(rec)[0] == []


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_check_failed_card_names_the_check(lang: str) -> None:
    finding = Finding(CHECK_FAILED, "rule-error", facts={"check": "colchicine-renal"})
    card = RENDERER.render(finding, lang, "p1")
    assert_valid_response({"cards": [card]})
    assert LIBRARY.cards["colchicine-renal"].data["title"][lang] in card["summary"]
    assert "url" not in card["source"]
