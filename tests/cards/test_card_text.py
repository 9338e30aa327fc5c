"""Card text as a clinician reads it, in French and English (issue 12, point 5).

Two views: every rendered card of every fixture (generated and field, both languages), and the
text of the card files themselves. The checks are the ones a rheumatologist or nephrologist would
make: summaries short enough never to be cut, critical cards that open with the action, units in
the reader's convention, no US-only wording or doses in French cards, real plurals, French
quotation marks, and a laboratory eGFR never called "measured".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import cds_service.cards.render as render_module
import tests.field_ehr as field
from cds_service.app import create_app
from cds_service.cards import SUMMARY_MAX, CardLibrary, Renderer, shorten
from cds_service.cards.text import Formatter
from cds_service.knowledge.renal import RenalStatus
from cds_service.rules import RULES, Finding
from cds_service.settings import DEFAULT_CARDS_DIR
from cds_service.terminology import Terminology
from tests.conftest import NOW, SERVICES, fixture_names, load_request, make_settings
from tests.helpers import (
    ICD10CM,
    condition,
    creatinine,
    medication,
    observation,
    patient,
    record,
)
from tests.knowledge.test_knowledge import VARIANT_RECORDS

LIBRARY = CardLibrary(DEFAULT_CARDS_DIR, Terminology.load())
RENDERER = Renderer(LIBRARY)
NBSP = "\u00a0"
Card = dict[str, Any]


# --------------------------------------------------------------------------- rendered fixtures


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, Card]]:
    """(fixture, language, card) for every card of every fixture; fails if a summary had to be
    shortened by the renderer (card files must keep summaries short enough on their own)."""
    cut: list[str] = []
    real_shorten = render_module.shorten

    def recording_shorten(summary: str, limit: int = SUMMARY_MAX) -> str:
        if len(summary) > limit:
            cut.append(summary)
        return real_shorten(summary, limit)

    out: list[tuple[str, str, Card]] = []
    with pytest.MonkeyPatch.context() as mp, field.field_stub() as server:
        mp.setattr(render_module, "shorten", recording_shorten)
        clock = {"now": NOW}
        settings = make_settings(
            tmp_path_factory.mktemp("card-text"),
            fhir_servers=(server.base_url,),
            clock=lambda: clock["now"],
            **field.REPEATS_SHOWN,  # each patient runs twice (en, fr) on this store
        )
        app = create_app(settings)
        client = app.test_client()
        runs: list[tuple[str, str, dict[str, Any], datetime]] = [
            (f"{hook}/{name}", hook, load_request(name, hook), NOW)
            for hook in SERVICES
            for name in fixture_names(hook)
        ]
        for (hook, name), ehr in field.EHRS.items():
            request = field.prepare(ehr, "prefetch", field.fixture_base(server, hook, name))
            runs.append((f"field/{hook}/{name}", hook, request, field.anchor(ehr)))
        for where, hook, request, now in runs:
            clock["now"] = now
            for lang in ("en", "fr"):
                response = client.post(
                    f"/cds-services/{SERVICES[hook]}",
                    json=request,
                    headers={"Accept-Language": lang},
                )
                assert response.status_code == 200, (where, response.json)
                out += [(where, lang, card) for card in response.json["cards"]]
        app.extensions["cds_engine"].close()
    assert not cut, f"summaries the renderer had to cut: {cut}"
    return out


def _prose(card: Card) -> str:
    """The card's own words: summary and detail without record text (evidence, references)."""
    detail = card["detail"].split("\n\n**")[0]
    return f"{card['summary']}\n{detail}"


def test_fixtures_render_cards_in_both_languages(rendered: list[tuple[str, str, Card]]) -> None:
    langs = {lang for _, lang, _ in rendered}
    assert langs == {"en", "fr"}
    assert len(rendered) > 100


def test_every_summary_fits_without_being_cut(rendered: list[tuple[str, str, Card]]) -> None:
    for where, lang, card in rendered:
        summary = card["summary"]
        assert len(summary) <= SUMMARY_MAX, (where, lang, summary)
        assert not summary.endswith("…"), (where, lang, summary)


def test_critical_cards_open_with_the_action(rendered: list[tuple[str, str, Card]]) -> None:
    critical = [(w, lang, c) for w, lang, c in rendered if c["indicator"] == "critical"]
    assert {c["source"]["topic"]["code"] for _, _, c in critical} >= {
        "aluminium-hydroxide-renal",
        "colchicine-interaction",
        "bisphosphonate-renal",
        "ccb-hypotension",
        "ccb-av-block",
    }
    for where, lang, card in critical:
        first, second = card["detail"].split("\n")[:2]
        assert re.match(r"\*\*[^*]+\*\*", first), (where, lang, first)
        # the reason follows at once, before the record facts ("Active order: ...")
        assert ":" in first + second, (where, lang, first)
        assert not second.startswith(("Active order", "Draft order", "Prescription")), where


def test_french_cards_use_french_units(rendered: list[tuple[str, str, Card]]) -> None:
    shown = " ".join(c["detail"] for _, lang, c in rendered if lang == "fr")
    # the value as the laboratory sent it may follow in brackets; the card's own value never
    own = re.sub(r"\(valeur transmise : [^)]*\)", "", shown)
    assert not re.search(r"\d mg/dL", own), "a French card shows mg/dL"
    assert "µmol/L" in own
    assert "mmol/L" in own
    assert "mg²/dL² (supérieur" not in own


def test_english_cards_keep_mg_per_dl(rendered: list[tuple[str, str, Card]]) -> None:
    shown = " ".join(c["detail"] for _, lang, c in rendered if lang == "en")
    assert re.search(r"serum creatinine \d\.\d\d mg/dL", shown)
    assert not re.search(r"(creatinine|calcium|phosphate) \d+ (µ|u)mol/L on", shown)


def test_a_laboratory_egfr_is_not_called_measured(rendered: list[tuple[str, str, Card]]) -> None:
    for where, lang, card in rendered:
        text = card["detail"]
        assert "(measured" not in text, (where, lang)
        assert "mesuré" not in text, (where, lang)
    fr = " ".join(c["detail"] for _, lang, c in rendered if lang == "fr")
    en = " ".join(c["detail"] for _, lang, c in rendered if lang == "en")
    assert "rendu par le laboratoire" in fr
    assert "reported by the laboratory" in en


def test_french_cards_never_say_ckd_or_notice(rendered: list[tuple[str, str, Card]]) -> None:
    for where, lang, card in rendered:
        if lang != "fr":
            continue
        text = _prose(card)
        assert not re.search(r"\bCKD G", text), (where, text)
        assert not re.search(r"\bnotice\b", text, re.IGNORECASE), (where, text)


def test_quotation_marks_follow_the_language(rendered: list[tuple[str, str, Card]]) -> None:
    for where, lang, card in rendered:
        text = f"{card['summary']}\n{card['detail']}"
        if lang == "en":
            assert "«" not in text, where
            assert "»" not in text, where
        else:
            assert "« " not in text, (where, "plain space after «")
            assert " »" not in text, (where, "plain space before »")
            assert "“" not in _prose(card), where


# --------------------------------------------------------------------------- card files


def _texts(node: Any, lang: str) -> Iterator[str]:
    """Every text of a card file in one language."""
    if isinstance(node, Mapping):
        if isinstance(node.get("en"), str) and isinstance(node.get("fr"), str):
            yield node[lang]
        else:
            for value in node.values():
                yield from _texts(value, lang)
    elif isinstance(node, list):
        for value in node:
            yield from _texts(value, lang)


def _all_texts(lang: str) -> list[str]:
    files = [LIBRARY.common, *(c.data for c in LIBRARY.cards.values())]
    return [text for data in files for text in _texts(data, lang)]


def test_no_hedged_plurals_in_any_language() -> None:
    for lang in ("en", "fr"):
        for text in _all_texts(lang):
            assert not re.search(r"\w\((s|x|es)\)", text), (lang, text)


def test_french_text_has_no_us_only_wording() -> None:
    for text in _all_texts("fr"):
        assert not re.search(r"\bnotices?\b", text, re.IGNORECASE), text  # the patient leaflet
        assert not re.search(r"\bCKD G", text), text  # MRC stade G4
        assert not re.search(r"\boz\b", text), text  # un grand verre d'eau
        assert not re.search(r"\b0,[36] mg\b", text), text  # US colchicine strengths
        assert "mEq/L" not in text, text
        assert "« " not in text, text
        assert " »" not in text, text


def test_english_text_has_no_french_quotation_marks() -> None:
    for text in _all_texts("en"):
        assert "«" not in text, text
        assert "»" not in text, text


def test_french_colchicine_cards_name_the_french_strength_and_contraindication() -> None:
    renal = LIBRARY.cards["colchicine-renal"].data
    detail = renal["variants"]["severe-renal"]["detail"]["fr"]
    assert "1 mg" in detail
    assert "contre-indiquée" in detail
    assert any("ANSM" in ref["fr"] for ref in renal["references"])
    interaction = LIBRARY.cards["colchicine-interaction"].data
    assert "spiramycine" in interaction["variants"]["interaction"]["detail"]["fr"]


def test_every_critical_variant_opens_with_a_bold_action() -> None:
    for card in LIBRARY.cards.values():
        for name, variant in card.data["variants"].items():
            if variant["indicator"] != "critical":
                continue
            for lang in ("en", "fr"):
                first = variant["detail"][lang].lstrip().split("\n")[0]
                assert first.startswith("**"), (card.rule, name, lang, first)


def test_every_variant_summary_fits_with_real_facts() -> None:
    for (rule, _variant), records in VARIANT_RECORDS.items():
        for finding in (f for rec in records for f in RULES[rule](rec)):
            content = LIBRARY.cards[finding.rule]
            raw = content.variant(finding.variant)["summary"]
            for lang in ("en", "fr"):
                values = Formatter(LIBRARY, lang).values(finding.facts)
                summary = " ".join(raw[lang].format_map(values).split())
                assert len(summary) <= SUMMARY_MAX, (rule, finding.variant, lang, summary)


# --------------------------------------------------------------------------- formatting


def _render(finding: Finding, lang: str) -> Card:
    return RENDERER.render(finding, lang, "p1")


def test_creatinine_is_shown_in_umol_per_litre_in_french() -> None:
    rec = record(patient(), medication(), creatinine(2.15, "mg/dL", days_ago=15))
    finding = RULES["aluminium-hydroxide-renal"](rec)[0]
    fr = _render(finding, "fr")["detail"]
    en = _render(finding, "en")["detail"]
    assert "créatininémie de 190 µmol/L" in fr  # 2.15 x 88.4 = 190.06
    assert "créatininémie 190 µmol/L le" in fr
    assert "(valeur transmise : 2,15 mg/dL)" in fr  # as the laboratory sent it
    assert "creatinine 2.15 mg/dL" in en
    assert "reported as" not in en  # sent in the unit shown


def test_calcium_phosphate_and_their_product_in_french_units() -> None:
    rec = record(
        patient(),
        condition(ICD10CM, "L94.2"),
        observation("17861-6", 11.0, "mg/dL", 5, "ca", high=10.2, flags=("H",)),
        observation("2777-1", 7.0, "mg/dL", 5, "p", high=4.5),
    )
    finding = RULES["calcinosis-type"](rec)[0]
    fr = _render(finding, "fr")["detail"]
    en = _render(finding, "en")["detail"]
    assert "calcémie 2,74 mmol/L" in fr  # 11.0 / 4.008
    assert "phosphatémie 2,26 mmol/L" in fr  # 7.0 / 3.097
    assert "produit phosphocalcique 6,2 mmol²/L²" in fr  # 77 / (4.008 x 3.097)
    assert "calcium 11.0 mg/dL" in en
    assert "product 77 mg²/dL²" in en


def test_risk_factor_counts_are_real_plurals() -> None:
    fmt_fr = Formatter(LIBRARY, "fr")
    fmt_en = Formatter(LIBRARY, "en")
    assert fmt_fr.count("risk_factors", 1) == "1 facteur de risque"
    assert fmt_fr.count("risk_factors", 3) == "3 facteurs de risque"
    assert fmt_en.count("risk_factors", 1) == "1 risk factor"
    assert fmt_en.count("risk_factors", 2) == "2 risk factors"


def test_missing_tests_are_listed_with_a_final_or_and_ni() -> None:
    facts = {"missing": ["calcium-order", "pth-order", "renal-function-order"]}
    fr = Formatter(LIBRARY, "fr").values(facts)["missing_short"]
    en = Formatter(LIBRARY, "en").values(facts)["missing_short"]
    assert fr == "calcémie, PTH ni créatininémie"
    assert en == "calcium, PTH or creatinine"


def test_coded_ckd_reads_mrc_stade_in_french() -> None:
    status = RenalStatus(source="coded", category="G4")
    assert Formatter(LIBRARY, "fr").renal_short(status).startswith("MRC stade G4")
    assert Formatter(LIBRARY, "en").renal_short(status).startswith("CKD G4")


def test_a_summary_is_cut_at_a_word_boundary() -> None:
    text = "Calcinosis work-up incomplete: " + "creatinine with eGFR, " * 8
    cut = shorten(text.strip())
    assert len(cut) <= SUMMARY_MAX
    assert cut.endswith("…")
    kept = cut[:-1]
    assert text.startswith(kept)
    assert text[len(kept)] in " ,"  # whole words only
    assert shorten("short") == "short"


def test_card_files_exist_for_every_rule() -> None:  # guards the walk over the files above
    assert set(LIBRARY.cards) >= set(RULES)
    assert Path(DEFAULT_CARDS_DIR, "_common.yaml").is_file()
