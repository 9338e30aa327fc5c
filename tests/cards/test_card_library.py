"""The card library checks every placeholder at load time; the renderer fills them from one table
of fact keys (cds_service/cards/library.py, cds_service/cards/facts.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.cards import CardContentError, CardLibrary, Renderer, load_library
from cds_service.cards.facts import FACT_TEXT, FILLED
from cds_service.cards.text import Formatter
from cds_service.rules import RULES, Finding
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import TERMINOLOGY, drug, egfr, patient, record
from tests.knowledge.test_knowledge import VARIANT_RECORDS


def cards_copy(tmp_path: Path, rule: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the real cards directory, with one card file edited."""
    cards = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, cards)
    path = cards / f"{rule}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return cards


def test_the_real_cards_load() -> None:
    library = load_library(DEFAULT_CARDS_DIR, TERMINOLOGY)
    assert set(RULES) <= set(library.cards)


def test_a_placeholder_typo_is_refused_naming_file_variant_and_placeholder(
    tmp_path: Path,
) -> None:
    def typo(data: dict[str, Any]) -> None:
        summary = data["variants"]["interaction"]["summary"]
        assert "{drug_name}" in summary["fr"]
        summary["fr"] = summary["fr"].replace("{drug_name}", "{drug_nme}", 1)

    cards = cards_copy(tmp_path, "colchicine-interaction", typo)
    with pytest.raises(CardContentError) as refused:
        CardLibrary(cards, TERMINOLOGY)
    message = str(refused.value)
    assert "colchicine-interaction.yaml" in message
    assert "variants.interaction.summary.fr" in message
    assert "{drug_nme}" in message
    assert "did you mean {drug_name}" in message


def test_a_typo_in_a_summary_of_a_non_safety_card_is_refused(tmp_path: Path) -> None:
    def typo(data: dict[str, Any]) -> None:
        data["variants"]["risk-factors"]["summary"]["en"] += " {risk_factor}"

    cards = cards_copy(tmp_path, "calcinosis-risk-screening", typo)
    with pytest.raises(CardContentError, match=r"variants\.risk-factors\.summary\.en.*risk_factor"):
        CardLibrary(cards, TERMINOLOGY)


def test_a_positional_or_unbalanced_brace_is_refused(tmp_path: Path) -> None:
    def positional(data: dict[str, Any]) -> None:
        data["variants"]["rule-error"]["detail"]["en"] += " {}"

    with pytest.raises(CardContentError, match=r"\{\} is never filled"):
        CardLibrary(cards_copy(tmp_path / "a", "check-failed", positional), TERMINOLOGY)

    def unbalanced(data: dict[str, Any]) -> None:
        data["variants"]["rule-error"]["summary"]["fr"] += " {check"

    with pytest.raises(CardContentError, match="unmatched brace"):
        CardLibrary(cards_copy(tmp_path / "b", "check-failed", unbalanced), TERMINOLOGY)


def test_a_rule_param_fills_only_its_own_rule(tmp_path: Path) -> None:
    """{limit} comes from bisphosphonate-renal's rows in safety.yaml; colchicine-renal has none."""
    bisphosphonate = load_library(DEFAULT_CARDS_DIR, TERMINOLOGY).cards["bisphosphonate-renal"]
    assert "{limit}" in bisphosphonate.variant("not-recommended")["detail"]["en"]
    assert "limit" not in FILLED

    def borrow(data: dict[str, Any]) -> None:
        data["variants"]["severe-renal"]["summary"]["en"] += " (limit {limit})"

    with pytest.raises(
        CardContentError, match=r"colchicine-renal\.yaml: variants\.severe-renal.*limit"
    ):
        CardLibrary(cards_copy(tmp_path, "colchicine-renal", borrow), TERMINOLOGY)


def test_a_placeholder_in_text_shown_as_written_is_refused(tmp_path: Path) -> None:
    """Only summaries, details and an order-missing-labs label are filled in."""

    def in_step(data: dict[str, Any]) -> None:
        data["steps"]["small"]["en"] += " ({drug_name})"

    with pytest.raises(CardContentError, match=r"steps\.small\.en: \{drug_name\}"):
        CardLibrary(cards_copy(tmp_path / "a", "calcinosis-synthesis", in_step), TERMINOLOGY)

    def in_label(data: dict[str, Any]) -> None:
        key = next(k for k, s in data["suggestions"].items() if s["action"] == "stop-medication")
        data["suggestions"][key]["label"]["fr"] += " {drug}"

    with pytest.raises(CardContentError, match=r"suggestions\.\S+\.label\.fr: \{drug\}"):
        CardLibrary(cards_copy(tmp_path / "b", "colchicine-renal", in_label), TERMINOLOGY)

    def missing_labs(data: dict[str, Any]) -> None:
        key = next(k for k, s in data["suggestions"].items() if s["action"] == "order-missing-labs")
        label = data["suggestions"][key]["label"]
        label["en"] = label["en"].replace("{test}", "{tset}")

    with pytest.raises(CardContentError, match=r"\{tset\} is never filled \(did you mean \{test\}"):
        CardLibrary(cards_copy(tmp_path / "c", "calcinosis-synthesis", missing_labs), TERMINOLOGY)


def test_each_fact_key_fills_only_the_placeholders_it_declares() -> None:
    """The load-time check trusts `fills`: what a fact's text gives must be declared there."""
    library = load_library(DEFAULT_CARDS_DIR, TERMINOLOGY)
    seen: set[str] = set()
    for (rule, _variant), records in VARIANT_RECORDS.items():
        content = library.cards[rule]
        for finding in (f for rec in records for f in RULES[rule](rec)):
            for lang in ("en", "fr"):
                fmt = Formatter(
                    library, lang, content.data.get("steps"), content.data.get("context")
                )
                for key, value in finding.facts.items():
                    entry = FACT_TEXT.get(key)
                    if entry is not None and isinstance(value, entry.kind):
                        assert set(entry.text(fmt, value)) <= set(entry.fills), key
                        seen.add(key)
    assert {"drug", "other", "renal", "criterion", "factors", "abnormalities"} <= seen


def test_a_new_rule_using_existing_fact_keys_needs_no_renderer_edit(tmp_path: Path) -> None:
    """A card file for a rule the renderer has never heard of, whose facts are an order and a
    renal status, loads and renders."""
    cards = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, cards)
    base = yaml.safe_load((cards / "colchicine-renal.yaml").read_text(encoding="utf-8"))
    text = {
        "en": "New check: {drug_name} with {renal_short}",
        "fr": "Nouvelle vérification : {drug_name} avec {renal_short}",
    }
    new = {
        **{k: base[k] for k in ("title", "source", "evidence_level")},
        "rule": "new-rule",
        "suggestions": {},
        "variants": {
            "only": {"indicator": "warning", "suggestions": [], "summary": text, "detail": text}
        },
    }
    (cards / "new-rule.yaml").write_text(yaml.safe_dump(new, allow_unicode=True))
    renderer = Renderer(CardLibrary(cards, TERMINOLOGY))
    chart = record(patient(), drug("2683"), egfr(22))  # colchicine
    order = chart.medications[0]
    finding = Finding("new-rule", "only", facts={"drug": order, "renal": chart.renal})
    card = renderer.render(finding, "en", "p1")
    assert card["summary"] == "New check: colchicine with eGFR 22 (G4)"
    assert renderer.render(finding, "fr", "p1")["summary"].startswith("Nouvelle vérification : ")
