"""The card content files (``cards/*.yaml``), read and checked once at start-up.

A file that is incomplete or inconsistent is refused with `CardContentError` naming the file
and the field: text missing in a language, an unknown indicator, action, value set or
suggestion, and a `{placeholder}` the renderer can never fill. What a summary or a detail can
fill comes from the fact table (cards/facts.py) and the rule's `params` in
knowledge/safety.yaml; a suggestion label from `actions.LABEL_FILLS`; every other text is shown
as written, so a placeholder there is never filled.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.cards.actions import ACTION_KINDS, LABEL_FILLS
from cds_service.cards.facts import FILLED, is_number
from cds_service.knowledge.safety import load_table
from cds_service.settings import SUPPORTED_LANGUAGES
from cds_service.terminology import YAML_LOADER, Terminology

INDICATORS = ("critical", "warning", "info")  # most urgent first
_BRACED = re.compile(r"\{([^{}]*)\}")


class CardContentError(ValueError):
    """A card content file is incomplete or inconsistent (raised at start-up)."""


@dataclass(frozen=True)
class CardContent:
    rule: str
    data: Mapping[str, Any]

    def variant(self, name: str) -> Mapping[str, Any]:
        return self.data["variants"][name]


def _read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)  # noqa: S506


def _text(node: Any, lang: str, where: str, fills: frozenset[str] = frozenset()) -> str:
    """The text of `node` in `lang`, checked: both languages present, and every placeholder
    one of `fills` (a text shown as written fills none)."""
    if not isinstance(node, Mapping) or not all(isinstance(node.get(x), str) for x in ("en", "fr")):
        raise CardContentError(f"{where}: needs text in both 'en' and 'fr'")
    text: str = node[lang]
    for name in _placeholders(text, f"{where}.{lang}", formatted=bool(fills)):
        if name not in fills:
            close = difflib.get_close_matches(name, sorted(fills), n=1)
            hint = f" (did you mean {{{close[0]}}}?)" if close else ""
            raise CardContentError(f"{where}.{lang}: {{{name}}} is never filled{hint}")
    return text


def _placeholders(text: str, where: str, formatted: bool) -> list[str]:
    """The names of the placeholders in `text`: with str.format's grammar for a text the
    renderer fills (`{name.attr}` names `name`, `{}` names ""), else any `{...}`."""
    if not formatted:
        return _BRACED.findall(text)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError as exc:
        raise CardContentError(f"{where}: unmatched brace ({exc})") from None
    return [re.split(r"[.\[]", field, maxsplit=1)[0] for field in fields]


def rule_params(rule_id: str) -> frozenset[str]:
    """The placeholders a safety rule's rows add (numbers in their `params`), else none."""
    rule = load_table().get(rule_id)
    rows = rule.rows if rule is not None else ()
    return frozenset(k for row in rows for k, v in (row.params or {}).items() if is_number(v))


@cache
def load_library(cards_dir: Path, terminology: Terminology) -> CardLibrary:
    """The card content of `cards_dir`, read and checked once per process."""
    return CardLibrary(cards_dir, terminology)


class CardLibrary:
    """Every card content file, loaded and checked once."""

    def __init__(self, cards_dir: Path, terminology: Terminology) -> None:
        self.terminology = terminology
        common_file = cards_dir / "_common.yaml"
        self.common: Mapping[str, Any] = _read_yaml(common_file)
        self.version: str = str(self.common["knowledge_version"])
        self.cards: dict[str, CardContent] = {}
        for path in sorted(cards_dir.glob("[!_]*.yaml")):
            data = _read_yaml(path)
            if not isinstance(data, Mapping) or data.get("rule") != path.stem:
                raise CardContentError(f"{path.name}: 'rule' must equal the file name")
            self._check(path.name, data)
            self.cards[path.stem] = CardContent(path.stem, data)

    def _check(self, where: str, data: Mapping[str, Any]) -> None:
        filled = FILLED | rule_params(str(data["rule"]))
        for lang in SUPPORTED_LANGUAGES:
            _text(data.get("title"), lang, f"{where}: title")
            _text(data.get("source", {}).get("label"), lang, f"{where}: source.label")
            _text(data.get("evidence_level"), lang, f"{where}: evidence_level")
            for i, ref in enumerate(data.get("references") or ()):
                _text(ref, lang, f"{where}: references[{i}]")
            for i, reason in enumerate(data.get("override_reasons") or ()):
                _text(reason.get("display"), lang, f"{where}: override_reasons[{i}]")
            for i, link in enumerate(data.get("links") or ()):
                _text(link.get("label"), lang, f"{where}: links[{i}].label")
            for key, sug in (data.get("suggestions") or {}).items():
                at = f"{where}: suggestions.{key}"
                if sug.get("action") not in ACTION_KINDS:
                    raise CardContentError(f"{at}: unknown action")
                _text(
                    sug.get("label"),
                    lang,
                    f"{at}.label",
                    LABEL_FILLS.get(sug["action"], frozenset()),
                )
                for field in ("label_draft", "reason"):
                    if field in sug:
                        _text(sug[field], lang, f"{at}.{field}")
                if sug["action"] in ("order-lab", "propose-medication") and sug.get(
                    "valueset"
                ) not in (self.terminology.valuesets):
                    raise CardContentError(f"{at}: unknown value set")
                if sug["action"] == "propose-medication":
                    _text(sug.get("dose"), lang, f"{at}.dose")
                if sug["action"] == "order-service":
                    _text(sug.get("code_text"), lang, f"{at}.code_text")
            for feature, step in (data.get("steps") or {}).items():
                _text(step, lang, f"{where}: steps.{feature}")
            for key, line in (data.get("context") or {}).items():
                _text(line, lang, f"{where}: context.{key}")
            for name, variant in (data.get("variants") or {}).items():
                at = f"{where}: variants.{name}"
                if variant.get("indicator") not in INDICATORS:
                    raise CardContentError(f"{at}: indicator must be one of {INDICATORS}")
                _text(variant.get("summary"), lang, f"{at}.summary", filled)
                _text(variant.get("detail"), lang, f"{at}.detail", filled)
                for key in variant.get("suggestions") or ():
                    if key not in (data.get("suggestions") or {}):
                        raise CardContentError(f"{at}: unknown suggestion {key!r}")
        if not data.get("variants"):
            raise CardContentError(f"{where}: no variants")
