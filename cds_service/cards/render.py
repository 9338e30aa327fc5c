"""Findings -> CDS Hooks cards, in one language.

Card text never lives in Python: the renderer fills a variant's summary and detail from the
finding's facts (cards/facts.py, cards/text.py), lists the evidence, adds the suggestions
(cards/actions.py), override reasons and links, and merges into one card the findings that
are about the same order (`Finding.also`, rules/card_set.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cds_service.cards import actions
from cds_service.cards.library import CardContent, CardLibrary
from cds_service.cards.text import Formatter
from cds_service.rules.base import Finding
from cds_service.rules.coherence import Withheld

RULE_SYSTEM = "urn:calcinosis-cds:rule"
OVERRIDE_SYSTEM = "urn:calcinosis-cds:override-reason"
SUMMARY_MAX = 139  # the spec: "<140-character summary"


def shorten(summary: str, limit: int = SUMMARY_MAX) -> str:
    """`summary` within `limit` characters: a last resort (card files keep their summaries short
    enough), cut at a word boundary, never mid-word, and marked with an ellipsis."""
    if len(summary) <= limit:
        return summary
    head = summary[: limit - 1]
    if not summary[limit - 1].isspace() and " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:(/-–") + "…"


class Renderer:
    """Renders findings as CDS Hooks cards in one language."""

    def __init__(self, library: CardLibrary) -> None:
        self.library = library
        self.common = library.common

    # ------------------------------------------------------------------ public

    def indicator(self, finding: Finding) -> str:
        """The indicator of the card a finding gets (its variant's, in cards/<rule>.yaml)."""
        return str(self.library.cards[finding.rule].variant(finding.variant)["indicator"])

    def render(
        self,
        finding: Finding,
        lang: str,
        patient_id: str,
        withheld: Mapping[str, Withheld] | None = None,
    ) -> dict[str, Any]:
        """One card. `withheld`: the drugs not to propose to this patient (rules/coherence.py);
        a suggestion proposing one is left out and the detail says why in one line.

        A finding that carries others about the same order (`also`, rules/card_set.py) gives
        one card: the lead's text, one "Also:" line per other finding, the suggestions of all
        (an action already offered is not offered twice), their override reasons, links and
        references."""
        content = self.library.cards[finding.rule]
        variant = content.variant(finding.variant)
        fmt = Formatter(self.library, lang, content.data.get("steps"), content.data.get("context"))
        values = fmt.values(finding.facts)
        parts = [(finding, content, variant)] + [
            (a, self.library.cards[a.rule], self.library.cards[a.rule].variant(a.variant))
            for a in finding.also
        ]
        suggestions: list[dict[str, Any]] = []
        held_all: list[Withheld] = []
        offered: set[tuple[Any, ...]] = set()
        for n, (part, part_content, part_variant) in enumerate(parts):
            keys = tuple(part_variant.get("suggestions") or ())
            held = actions.held(part_content, keys, part, withheld or {})
            held_all.extend(held.values())
            specs = part_content.data.get("suggestions") or {}
            identities = {key: actions.action_identity(specs[key], part) for key in keys}
            for key in keys:
                if key in held or identities[key] in offered:
                    continue  # withheld, or already offered by a more severe finding
                made = actions.suggestions(
                    self.library.terminology,
                    part_content,
                    key,
                    part_variant,
                    part,
                    lang,
                    patient_id,
                )
                for suggestion in made if n else ():
                    suggestion.pop("isRecommended", None)  # the lead's recommendation only
                suggestions.extend(made)
            offered.update(identities.values())
        once = {w.valueset: w for w in held_all}  # two suggestions may propose one drug
        not_proposed = [
            *(self._also_line(part, c, v, lang) for part, c, v in parts[1:]),
            *(fmt.not_proposed(w) for w in once.values()),
        ]
        summary = shorten(_summary(variant, lang, values))
        card: dict[str, Any] = {
            "uuid": str(uuid.uuid4()),
            "summary": summary,
            "indicator": variant["indicator"],
            "detail": self._detail(content, variant, finding, fmt, values, not_proposed, parts[1:]),
            "source": {
                "label": content.data["source"]["label"][lang],
                **({"url": url} if (url := content.data["source"].get("url")) else {}),
                "topic": {
                    "system": RULE_SYSTEM,
                    "code": finding.rule,
                    "display": f"{content.data['title'][lang]} ({self.library.version})",
                },
            },
        }
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "any"
        reasons = _merged((c.data.get("override_reasons") or () for _, c, _ in parts), "code")
        if reasons:
            card["overrideReasons"] = [
                {"system": OVERRIDE_SYSTEM, "code": r["code"], "display": r["display"][lang]}
                for r in reasons
            ]
        if links := _merged((c.data.get("links") or () for _, c, _ in parts), "url"):
            card["links"] = [
                {"label": link["label"][lang], "url": link["url"], "type": "absolute"}
                for link in links
            ]
        return card

    def _also_line(
        self, finding: Finding, content: CardContent, variant: Mapping[str, Any], lang: str
    ) -> str:
        """Another finding about the same order, in one line: "Also: <its summary>"."""
        fmt = Formatter(self.library, lang, content.data.get("steps"))
        summary = _summary(variant, lang, fmt.values(finding.facts))
        return fmt.t("also", "line").format(summary=summary)

    # ------------------------------------------------------------------ parts

    def _detail(
        self,
        content: CardContent,
        variant: Mapping[str, Any],
        finding: Finding,
        fmt: Formatter,
        values: Mapping[str, str],
        not_proposed: Sequence[str] = (),
        also: Sequence[tuple[Finding, CardContent, Mapping[str, Any]]] = (),
    ) -> str:
        """The detail. `not_proposed`: one-line notes after the text ("Also:" lines, drugs not
        proposed); `also`: the findings merged into this card, whose evidence levels and
        references follow the lead's and whose rule ids the footer names."""
        lang = fmt.lang
        heads = self.common["headings"]
        parts = [variant["detail"][lang].format_map(values).strip(), *not_proposed]
        lines = [f"- {fmt.evidence(item)}" for item in finding.evidence]
        lines = [line for line in lines if line != "- "]
        if lines:
            parts.append(f"**{heads['evidence'][lang]}**\n\n" + "\n".join(lines))
        level = content.data["evidence_level"][lang]
        parts.append(f"**{heads['evidence_level'][lang]}**{heads['colon'][lang]}{level}")
        others = list({c.rule: c for _, c, _ in also if c.rule != content.rule}.values())
        for other in others:  # each merged rule's own evidence level, named by its title
            parts.append(
                fmt.t("also", "evidence_level").format(
                    title=other.data["title"][lang], level=other.data["evidence_level"][lang]
                )
            )
        refs = [r[lang] for c in (content, *others) for r in c.data.get("references") or ()]
        if refs:
            items = "\n".join(f"- {r}" for r in dict.fromkeys(refs))
            parts.append(f"**{heads['references'][lang]}**\n\n{items}")
        if others:
            footer = fmt.t("also", "footer").format(
                rule=finding.rule,
                also=", ".join(f"`{c.rule}`" for c in others),
                version=self.library.version,
            )
        else:
            footer = heads["footer"][lang].format(rule=finding.rule, version=self.library.version)
        parts.append(f"_{footer}_")
        return "\n\n".join(parts)


def _summary(variant: Mapping[str, Any], lang: str, values: Mapping[str, str]) -> str:
    """A variant's summary filled in, on one line."""
    return " ".join(variant["summary"][lang].format_map(values).split())


def _merged(groups: Iterable[Iterable[Mapping[str, Any]]], key: str) -> list[Mapping[str, Any]]:
    """Items of several card files, in order, the first of each `key` only."""
    merged: dict[Any, Mapping[str, Any]] = {}
    for group in groups:
        for item in group:
            merged.setdefault(item[key], item)
    return list(merged.values())
