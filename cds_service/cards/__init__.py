"""Findings + card content (``cards/*.yaml``, French and English) -> CDS Hooks cards.

Card text never lives in Python: this module only loads the content files, fills their
placeholders from the record facts a finding names, lists the evidence, and builds the FHIR
resources of suggestions. Text that comes from the EHR (displays, free-text orders) is escaped
before it enters Markdown, so a record cannot inject markup into a card.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.fhir import units
from cds_service.fhir.record import (
    NOT_ALLOWED,
    CodedResult,
    ConditionFact,
    DataNote,
    LabResult,
    MedicationFact,
)
from cds_service.knowledge.renal import RenalStatus
from cds_service.rules.base import Finding
from cds_service.rules.coherence import Withheld
from cds_service.settings import SUPPORTED_LANGUAGES
from cds_service.terminology import ATC, LOINC, RXNORM, YAML_LOADER, Terminology
from cds_service.terminology.medicines import ingredient_title

INDICATORS = ("critical", "warning", "info")  # most urgent first
ACTION_KINDS = (
    "stop-medication",
    "order-lab",
    "order-missing-labs",
    "order-service",
    "propose-medication",
)
RULE_SYSTEM = "urn:calcinosis-cds:rule"
OVERRIDE_SYSTEM = "urn:calcinosis-cds:override-reason"
SUMMARY_MAX = 139  # the spec: "<140-character summary"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~&])")


class CardContentError(ValueError):
    """A card content file is incomplete or inconsistent (raised at start-up)."""


def shorten(summary: str, limit: int = SUMMARY_MAX) -> str:
    """`summary` within `limit` characters: a last resort (card files keep their summaries short
    enough), cut at a word boundary, never mid-word, and marked with an ellipsis."""
    if len(summary) <= limit:
        return summary
    head = summary[: limit - 1]
    if not summary[limit - 1].isspace() and " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:(/-–") + "…"


def md_escape(text: str) -> str:
    """Escape EHR-provided text for GitHub-flavoured Markdown (no links, HTML or emphasis)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _text(node: Any, lang: str, where: str) -> str:
    if not isinstance(node, Mapping) or not all(isinstance(node.get(x), str) for x in ("en", "fr")):
        raise CardContentError(f"{where}: needs text in both 'en' and 'fr'")
    return node[lang]


@dataclass(frozen=True)
class CardContent:
    rule: str
    data: Mapping[str, Any]

    def variant(self, name: str) -> Mapping[str, Any]:
        return self.data["variants"][name]


def _read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)  # noqa: S506


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
                _text(sug.get("label"), lang, f"{where}: suggestions.{key}.label")
                if "label_draft" in sug:
                    _text(sug["label_draft"], lang, f"{where}: suggestions.{key}.label_draft")
                if sug.get("action") not in ACTION_KINDS:
                    raise CardContentError(f"{where}: suggestions.{key}: unknown action")
                if sug["action"] in ("order-lab", "propose-medication") and sug.get(
                    "valueset"
                ) not in (self.terminology.valuesets):
                    raise CardContentError(f"{where}: suggestions.{key}: unknown value set")
                if sug["action"] == "propose-medication":
                    _text(sug.get("dose"), lang, f"{where}: suggestions.{key}.dose")
                if sug["action"] == "order-service":
                    _text(sug.get("code_text"), lang, f"{where}: suggestions.{key}.code_text")
            for feature, step in (data.get("steps") or {}).items():
                _text(step, lang, f"{where}: steps.{feature}")
            for key, line in (data.get("context") or {}).items():
                _text(line, lang, f"{where}: context.{key}")
            for name, variant in (data.get("variants") or {}).items():
                at = f"{where}: variants.{name}"
                if variant.get("indicator") not in INDICATORS:
                    raise CardContentError(f"{at}: indicator must be one of {INDICATORS}")
                _text(variant.get("summary"), lang, f"{at}.summary")
                _text(variant.get("detail"), lang, f"{at}.detail")
                for key in variant.get("suggestions") or ():
                    if key not in (data.get("suggestions") or {}):
                        raise CardContentError(f"{at}: unknown suggestion {key!r}")
        if not data.get("variants"):
            raise CardContentError(f"{where}: no variants")


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
        fmt = _Formatter(self.library, lang, content.data.get("steps"), content.data.get("context"))
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
            held = self._held(part_content, keys, part, withheld or {})
            held_all.extend(held.values())
            specs = part_content.data.get("suggestions") or {}
            identities = {key: _action_identity(specs[key], part) for key in keys}
            for key in keys:
                if key in held or identities[key] in offered:
                    continue  # withheld, or already offered by a more severe finding
                made = self._suggestions(part_content, key, part_variant, part, lang, patient_id)
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
        fmt = _Formatter(self.library, lang, content.data.get("steps"))
        summary = _summary(variant, lang, fmt.values(finding.facts))
        return fmt.t("also", "line").format(summary=summary)

    # ------------------------------------------------------------------ parts

    def _detail(
        self,
        content: CardContent,
        variant: Mapping[str, Any],
        finding: Finding,
        fmt: _Formatter,
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

    def _held(
        self,
        content: CardContent,
        keys: Iterable[str],
        finding: Finding,
        withheld: Mapping[str, Withheld],
    ) -> dict[str, Withheld]:
        """The card's suggestions that would propose a withheld drug: suggestion key -> why."""
        held = {}
        for key in keys:
            spec = content.data["suggestions"][key]
            proposes = spec["action"] == "propose-medication" and _applies(spec, finding)
            if proposes and (why := withheld.get(spec["valueset"])) is not None:
                held[key] = why
        return held

    def _suggestions(
        self,
        content: CardContent,
        key: str,
        variant: Mapping[str, Any],
        finding: Finding,
        lang: str,
        patient_id: str,
    ) -> list[dict[str, Any]]:
        spec = content.data["suggestions"][key]
        if not _applies(spec, finding):
            return []  # a suggestion for a lesion feature this patient does not have
        if spec["action"] == "order-missing-labs":  # one suggestion per missing test
            return [
                self._suggestion(
                    {**spec, "action": "order-lab", "valueset": missing},
                    key,
                    variant,
                    finding,
                    lang,
                    patient_id,
                    label=spec["label"][lang].format(
                        test=self.library.terminology[missing].title[lang]
                    ),
                )
                for missing in finding.facts.get("missing", ())
            ]
        one = self._suggestion(spec, key, variant, finding, lang, patient_id)
        return [one] if one is not None else []

    def _suggestion(
        self,
        spec: Mapping[str, Any],
        key: str,
        variant: Mapping[str, Any],
        finding: Finding,
        lang: str,
        patient_id: str,
        label: str | None = None,
    ) -> dict[str, Any] | None:
        label = label or spec["label"][lang]
        if spec["action"] == "stop-medication":
            drug = finding.facts.get("drug")
            if not isinstance(drug, MedicationFact) or drug.id is None:
                return None  # nothing to act on without a resource id
            if drug.draft:  # remove the draft from the order being signed
                label = spec.get("label_draft", spec["label"])[lang]
                action = {
                    "type": "delete",
                    "description": label,
                    "resourceId": f"MedicationRequest/{drug.id}",
                }
            else:  # stop the active order
                resource = copy.deepcopy(dict(drug.resource))
                resource["status"] = "stopped"
                resource["statusReason"] = {"text": spec["reason"][lang]}
                action = {"type": "update", "description": label, "resource": resource}
        elif spec["action"] == "propose-medication":
            valueset = self.library.terminology[spec["valueset"]]
            coding = valueset.first(RXNORM) or valueset.first(ATC)
            medication: dict[str, Any] = {"text": valueset.title[lang]}
            if coding is not None:
                medication["coding"] = [
                    {"system": coding.system, "code": coding.code, "display": coding.display}
                ]
            resource = {
                "resourceType": "MedicationRequest",
                "status": "draft",
                "intent": "proposal",
                "subject": {"reference": f"Patient/{patient_id}"},
                "medicationCodeableConcept": medication,
                "dosageInstruction": [{"text": spec["dose"][lang]}],
            }
            action = {"type": "create", "description": label, "resource": resource}
        elif spec["action"] == "order-service":  # coded by text: no verified code exists
            resource = _service_request(patient_id, {"text": spec["code_text"][lang]})
            action = {"type": "create", "description": label, "resource": resource}
        else:  # order-lab
            valueset = self.library.terminology[spec["valueset"]]
            concept = valueset.first(LOINC)
            assert concept is not None, f"{valueset.id} has no LOINC code"
            coding = {"system": concept.system, "code": concept.code, "display": concept.display}
            code = {"coding": [coding], "text": valueset.title[lang]}
            action = {
                "type": "create",
                "description": label,
                "resource": _service_request(patient_id, code),
            }
        suggestion: dict[str, Any] = {
            "label": label,
            "uuid": str(uuid.uuid4()),
            "actions": [action],
        }
        if variant.get("recommended") == key:
            suggestion["isRecommended"] = True
        return suggestion


def _summary(variant: Mapping[str, Any], lang: str, values: Mapping[str, str]) -> str:
    """A variant's summary filled in, on one line."""
    return " ".join(variant["summary"][lang].format_map(values).split())


def _action_identity(spec: Mapping[str, Any], finding: Finding) -> tuple[Any, ...]:
    """What a suggestion does, whoever offers it: two cards merged into one (rules/card_set.py)
    offer "stop this order" or "order creatinine" once."""
    drug = finding.facts.get("drug")
    target = drug.ref if isinstance(drug, MedicationFact) else None
    code = spec.get("code_text") or {}
    return (
        spec["action"],
        spec.get("valueset"),
        code.get("en") if isinstance(code, Mapping) else None,
        target if spec["action"] == "stop-medication" else None,
    )


def _merged(groups: Iterable[Iterable[Mapping[str, Any]]], key: str) -> list[Mapping[str, Any]]:
    """Items of several card files, in order, the first of each `key` only."""
    merged: dict[Any, Mapping[str, Any]] = {}
    for group in groups:
        for item in group:
            merged.setdefault(item[key], item)
    return list(merged.values())


def _applies(spec: Mapping[str, Any], finding: Finding) -> bool:
    """A suggestion tied to a lesion feature applies only when the patient has it."""
    return "feature" not in spec or spec["feature"] in finding.facts.get("features", ())


def proposed_valuesets(library: CardLibrary, rule_ids: Iterable[str]) -> frozenset[str]:
    """The drugs (value sets) the cards of these rules may propose in one click."""
    return frozenset(
        spec["valueset"]
        for rule in rule_ids
        if (content := library.cards.get(rule)) is not None
        for spec in (content.data.get("suggestions") or {}).values()
        if spec.get("action") == "propose-medication"
    )


def _service_request(patient_id: str, code: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": dict(code),
    }


# How a laboratory comparator is written on a card (FHIR Quantity.comparator codes).
SHOWN_COMPARATORS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}

# The unit each reader expects, where it is not the canonical one (units.CANONICAL, mg/dL for
# creatinine, calcium and phosphate, as US laboratories report them): French laboratories
# report creatinine in µmol/L and calcium and phosphate in mmol/L.
# concept -> lang -> (unit label, factor from the canonical unit, decimals shown).
SHOWN_UNITS: dict[str, dict[str, tuple[str, float, int]]] = {
    "egfr": {"fr": ("mL/min/1,73 m²", 1.0, 0)},  # the French decimal comma
    "creatinine": {"fr": ("µmol/L", units.CREATININE_UMOL_PER_MG_DL, 0)},
    "calcium": {"fr": ("mmol/L", 1 / units.CALCIUM_MG_DL_PER_MMOL_L, 2)},
    "phosphate": {"fr": ("mmol/L", 1 / units.PHOSPHATE_MG_DL_PER_MMOL_L, 2)},
    # calcium × phosphate product, computed in mg²/dL² (rules/calcinosis_type.py)
    "calcium-phosphate-product": {
        "en": ("mg²/dL²", 1.0, 0),
        "fr": (
            "mmol²/L²",
            1 / (units.CALCIUM_MG_DL_PER_MMOL_L * units.PHOSPHATE_MG_DL_PER_MMOL_L),
            1,
        ),
    },
}


class _Formatter:
    """Locale-aware formatting of record facts for one card."""

    def __init__(
        self,
        library: CardLibrary,
        lang: str,
        card_steps: Mapping[str, Any] | None = None,
        card_context: Mapping[str, Any] | None = None,
    ) -> None:
        self.library = library
        self.common = library.common
        self.lang = lang
        self.card_steps = card_steps  # the card's `steps` (lesion features), if any
        self.card_context = card_context  # the card's `context` lines (by disease), if any

    def t(self, *path: str) -> str:
        node: Any = self.common
        for key in path:
            node = node[key]
        return node[self.lang]

    def number(self, value: float, decimals: int) -> str:
        text = f"{value:.{decimals}f}"
        return text.replace(".", ",") if self.lang == "fr" else text

    def quantity_parts(
        self, concept: str, value: float, comparator: str | None = None
    ) -> tuple[str, str]:
        """A canonical-unit value in this reader's unit: ("2.15", "mg/dL") / ("190", "µmol/L")."""
        shown = SHOWN_UNITS.get(concept, {}).get(self.lang)
        if shown is None:
            number = self.number(value, units.decimals(concept))
            unit = units.canonical_label(concept)
        else:
            number = self.number(value * shown[1], shown[2])
            unit = shown[0]
        return self.comparator(comparator) + number, unit

    def quantity(self, concept: str, value: float, comparator: str | None = None) -> str:
        return " ".join(self.quantity_parts(concept, value, comparator))

    def shown_unit(self, concept: str) -> str:
        shown = SHOWN_UNITS.get(concept, {}).get(self.lang)
        return shown[0] if shown else units.canonical_label(concept)

    def as_sent(self, value: float) -> str:
        """A number as a laboratory wrote it: "11", "10.1", "2.72" (no padding zeros)."""
        text = f"{value:.2f}".rstrip("0").rstrip(".")
        return text.replace(".", ",") if self.lang == "fr" else text

    def since(self, value: date | None) -> str:
        """ ", since 2024-01-31" for a dated fact, else nothing."""
        return self.t("evidence", "since").format(date=self.date(value)) if value else ""

    def date(self, value: date | datetime | None) -> str:
        if value is None:
            return "?"
        day = value.date() if isinstance(value, datetime) else value
        return day.strftime("%d/%m/%Y") if self.lang == "fr" else day.isoformat()

    def concept(self, valueset: str) -> str:
        return self.library.terminology[valueset].title[self.lang]

    def drug(self, medication: MedicationFact) -> str:
        """The drug's name in this language: the title of the value set it was matched to."""
        return self.concept(medication.match.valueset)

    def how(self, fact: ConditionFact | MedicationFact) -> str:
        match = fact.match
        if match.how in self.common.get("recognised_by", {}):
            return self.common["recognised_by"][match.how][self.lang].format(code=match.label)
        return match.label if match.by == "code" else self.t("recognised_by_text")

    def ingredients(self, names: tuple[str, ...]) -> str:
        return ", ".join(ingredient_title(name, self.lang) for name in names)

    def product(self, order: MedicationFact) -> str:
        """The product as sent, what it holds and how it was recognised: "MAALOX, suspension
        buvable (aluminium hydroxide, magnesium hydroxide; recognised by brand name)"."""
        match = order.match
        # No name sent (a bare code): the name the lexicon knows the product by, else the code.
        name = match.product or match.known_as or order.display
        holds = self.ingredients(match.ingredients) if match.ingredients else self.drug(order)
        sep = " ; " if self.lang == "fr" else "; "
        return f"{md_escape(name)} ({holds}{sep}{self.how(order)})"

    def product_note(self, order: MedicationFact) -> str:
        """A caveat on the product's composition (a brand whose products differ), or ""."""
        note = dict(order.match.note).get(self.lang)
        return f" {md_escape(note)}" if note else ""

    # ---------------------------------------------------------------- values

    def values(self, facts: Mapping[str, Any]) -> dict[str, str]:
        values: dict[str, str] = {}
        for key, name in (("drug", "drug"), ("other", "other")):
            order = facts.get(key)
            if isinstance(order, MedicationFact):
                values[name] = self.product(order)
                values[f"{name}_name"] = self.drug(order)
                values[f"{name}_salts"] = (
                    self.ingredients(order.match.salts) if order.match.salts else self.drug(order)
                )
                values[f"{name}_note"] = self.product_note(order)
                values[f"{'order' if key == 'drug' else 'other'}_kind"] = self.t(
                    "order_kind", "draft" if order.draft else "active"
                )
        renal = facts.get("renal")
        if isinstance(renal, RenalStatus):
            values["renal_short"] = self.renal_short(renal)
            values["renal_long"] = self.renal_long(renal)
        if "criterion" in facts:
            values["criterion"] = self.criterion(facts["criterion"])
        if isinstance(facts.get("limit"), int | float):
            values["limit"] = self.number(float(facts["limit"]), 0)
        if isinstance(facts.get("disease"), str):
            values["disease"] = self.concept(facts["disease"])
        if "factors" in facts:
            lines = [self.risk_factor(key, params) for key, params in facts["factors"]]
            values["factors"] = "\n".join(f"- {line}" for line in lines)
            values["factor_count"] = str(len(lines))
            values["risk_factors"] = self.count("risk_factors", len(lines))
        if "missing" in facts:
            values["missing"] = ", ".join(self.concept(m) for m in facts["missing"])
            values["missing_short"] = self.alternatives(
                [self.t("short_test", m) for m in facts["missing"]]
            )
        if isinstance(facts.get("check"), str):  # the rule a check-failed card is about
            rule = self.library.cards.get(facts["check"])
            values["check"] = rule.data["title"][self.lang] if rule else facts["check"]
        if "features" in facts:
            steps = self.card_steps or {}
            lines = [steps[f][self.lang] for f in facts["features"] if f in steps]
            values["steps"] = "\n".join(f"- {line}" for line in lines)
            values["step_count"] = self.count("steps", len(lines))
        if isinstance(facts.get("context"), str) and self.card_context:
            values["context"] = self.card_context[facts["context"]][self.lang].strip()
        if facts.get("notes"):
            values["notes_summary"] = self.notes_summary(tuple(facts["notes"]))
        if "abnormalities" in facts:
            lines = [self.abnormality(key, fact) for key, fact in facts["abnormalities"]]
            values["abnormalities"] = "\n".join(f"- {line}" for line in lines)
        return values

    def count(self, key: str, n: int) -> str:
        """ "1 risk factor", "3 risk factors" (French: 0 and 1 take the singular)."""
        form = "one" if n == 1 or (n == 0 and self.lang == "fr") else "other"
        return self.t("count", key, form).format(n=n)

    @staticmethod
    def joined(items: list[str], last: str) -> str:
        """ "a, b<last>c": a list in a sentence, `last` before its last item."""
        if len(items) < 2:
            return "".join(items)
        return f"{', '.join(items[:-1])}{last}{items[-1]}"

    def alternatives(self, items: list[str]) -> str:
        """ "a, b or c" / "a, b ni c" (after a negation: "no ...", "pas de ...")."""
        return self.joined(items, self.t("or_after_no"))

    def not_proposed(self, withheld: Withheld) -> str:
        """Why a card does not propose a drug, in one line: "Not proposed: colchicine — eGFR
        20 (G4) and current clarithromycin." (phrases: _common.yaml, `not_proposed`)."""
        drug = self.concept(withheld.valueset)
        if withheld.current:
            kinds = {"draft" if m.draft else m.status for m in withheld.current}
            kind = next(k for k in ("active", "on-hold", "draft") if k in kinds)
            return self.t("not_proposed", "line").format(
                drug=drug, why=self.t("not_proposed", "current", kind)
            )
        reasons = [self.not_proposed_reason(item) for item in withheld.reasons]
        if withheld.unchecked:
            reasons.append(self.t("not_proposed", "unchecked"))
        reasons = list(dict.fromkeys(r for r in reasons if r))
        why = self.joined(reasons, self.t("not_proposed", "and"))
        why = why or self.t("not_proposed", "unchecked")
        return self.t("not_proposed", "line").format(drug=drug, why=why)

    def not_proposed_reason(self, item: Any) -> str:
        """A record fact that stops a proposal, in a few words."""
        if isinstance(item, RenalStatus):
            return self.renal_short(item)
        if isinstance(item, ConditionFact):
            return self.concept(item.match.valueset)
        if isinstance(item, LabResult):
            return self.t("not_proposed", "lab").format(
                concept=self.concept(item.concept),
                value=" ".join(self.quantity_parts(item.concept, item.value, item.comparator)),
            )
        if isinstance(item, MedicationFact):
            return self.t("not_proposed", "partner").format(drug=self.drug(item))
        return ""

    def what(self, note: DataNote) -> str:
        kinds = self.common["data_note"]["what"]
        return kinds.get(note.resource_type, kinds["other"])[self.lang]

    def note_reason(self, note: DataNote) -> str:
        if note.reason == NOT_ALLOWED:
            return self.t("data_note", "not_allowed")
        return md_escape(note.reason) if note.reason else self.t("data_note", "no_reason")

    def data_note(self, note: DataNote) -> str:
        """One left-out item (unreadable resource, unidentified order, incomplete search)."""
        if note.kind == "incomplete":
            return self.t("evidence", "note_incomplete").format(
                key=md_escape(note.detail), reason=self.note_reason(note)
            )
        if note.kind == "unidentified-order":
            return self.t("evidence", "note_unidentified").format(ref=md_escape(note.ref))
        concept = f" ({self.concept(note.concept)})" if note.concept else ""
        return self.t("evidence", "note_unreadable").format(
            what=self.what(note), concept=concept, ref=md_escape(note.ref), field=note.detail
        )

    def notes_summary(self, notes: tuple[DataNote, ...]) -> str:
        if len(notes) > 1:
            return self.t("data_note", "several").format(count=len(notes))
        note = notes[0]
        if note.kind == "incomplete":
            return self.t("data_note", "one_incomplete").format(key=note.detail)
        if note.kind == "unidentified-order":
            return self.t("data_note", "one_unidentified").format(ref=note.ref)
        return self.t("data_note", "one_unreadable").format(
            what=self.what(note), ref=note.ref, field=note.detail
        )

    def criterion(self, fact: Any) -> str:
        """The record fact a safety card rests on, phrased for a sentence."""
        if isinstance(fact, RenalStatus):
            return self.renal_long(fact)
        if isinstance(fact, ConditionFact | LabResult | DataNote):
            return self.evidence(fact)
        return ""

    def risk_factor(self, key: str, params: Mapping[str, Any]) -> str:
        return self.t("risk_factor", key).format(**params)

    def lab_values(self, lab: LabResult) -> dict[str, str]:
        value, unit = self.quantity_parts(lab.concept, lab.value, lab.comparator)
        return {"value": value, "unit": unit, "date": self.date(lab.when)}

    def abnormality(self, key: str, fact: Any) -> str:
        if key == "calcium-phosphate-product":
            product, _calcium, _phosphate = fact
            return self.t("abnormality", key).format(value=self.quantity(key, product))
        if isinstance(fact, LabResult):
            return self.t("abnormality", key).format(**self.lab_values(fact))
        if isinstance(fact, ConditionFact):
            # Coded conditions (hyperparathyroidism, hypercalcaemia) share one phrasing.
            return self.t("abnormality", "hyperparathyroidism").format(
                display=md_escape(fact.display)
            )
        if isinstance(fact, RenalStatus):
            return self.t("abnormality", "renal").format(renal_short=self.renal_short(fact))
        return ""

    def comparator(self, comparator: str | None) -> str:
        """ "< " for "<": a laboratory bound is never shown without its comparator."""
        return f"{SHOWN_COMPARATORS[comparator]} " if comparator in SHOWN_COMPARATORS else ""

    def egfr(self, renal: RenalStatus) -> str:
        return self.comparator(renal.comparator) + self.number(renal.egfr or 0.0, 0)

    def renal_short(self, renal: RenalStatus) -> str:
        if renal.source == "coded":
            if renal.dialysis:
                return self.t("renal", "short_dialysis")
            if renal.category is None:
                return self.t("renal", "short_coded_unstaged")
            return self.t("renal", "short_coded").format(category=renal.category)
        if renal.source in ("measured", "computed"):
            if renal.stale:
                return self.t("renal", "short_stale").format(
                    egfr=self.egfr(renal), date=self.date(renal.date)
                )
            return self.t("renal", "short_lab").format(
                egfr=self.egfr(renal), category=renal.category_label
            )
        return self.t("renal", "short_unknown")

    def renal_long(self, renal: RenalStatus) -> str:
        """The renal status in one sentence, naming its source and date (and the older
        evidence it outweighed)."""
        if renal.source == "coded" and renal.procedure is not None:
            return self.t("renal", "dialysis_procedure").format(
                display=md_escape(renal.procedure.display), date=self.date(renal.date)
            )
        if renal.source == "coded":
            assert renal.condition is not None
            since = self.since(renal.date)
            key = "dialysis" if renal.dialysis else "coded"
            older = renal.superseded
            asserted = renal.condition.asserted
            if key == "coded" and isinstance(older, LabResult) and asserted:
                key = "coded_newer" if asserted > older.when.date() else key
            return self.t("renal", key).format(
                display=md_escape(renal.condition.display),
                since=since,
                lab_date=self.date(older.when) if isinstance(older, LabResult) else "?",
            )
        if renal.source == "measured":
            assert renal.lab is not None
            text = self.t("renal", "measured").format(
                egfr=self.egfr(renal),
                date=self.date(renal.date),
                category=renal.category_label,
                code=renal.lab.code,
            )
        elif renal.source == "computed":
            assert renal.lab is not None
            sex = self.t("sex", renal.sex) if renal.sex else "?"
            ages = renal.age_range
            text = self.t("renal", "computed").format(
                egfr=self.egfr(renal),
                date=self.date(renal.date),
                category=renal.category_label,
                creatinine=self.quantity("creatinine", renal.lab.value, renal.lab.comparator),
                age=f"{ages[0]}-{ages[1]}" if ages else renal.age_at_test,
                sex=sex,
            )
            if ages:
                text += self.t("renal", "age_approximate")
        elif renal.reason == "egfr-not-computable":
            key = "not_computable"
            if "exact birth date" in renal.missing:
                key = "not_computable_age_range"
            return self.t("renal", key)
        else:
            return self.t("renal", "unknown")
        if isinstance(renal.superseded, ConditionFact):
            older = renal.superseded
            text += self.t("renal", "instead_of_coded").format(
                display=md_escape(older.display), since=self.since(older.since)
            )
        return self.t("renal", "stale").format(lab=text) if renal.stale else text

    # ---------------------------------------------------------------- evidence

    def evidence(self, item: Any) -> str:
        if isinstance(item, ConditionFact):
            status = item.verification_status
            if status not in self.common["condition_status"]:
                status = item.clinical_status
            label = self.common["condition_status"].get(status, {}).get(self.lang, status)
            since = self.since(item.since)
            return self.t("evidence", "condition").format(
                display=md_escape(item.display),
                status=label,
                since=since,
                how=self.how(item),
                ref=item.ref,
            )
        if isinstance(item, LabResult):
            measured = ""
            shown_unit = self.shown_unit(item.concept)
            same_unit = units.normalise_unit(item.measured_unit) == units.normalise_unit(shown_unit)
            converted = shown_unit != item.unit or item.measured_value != item.value
            if item.measured_unit and converted and not same_unit:  # as the laboratory sent it
                measured = self.t("evidence", "lab_measured_as").format(
                    value=self.comparator(item.comparator) + self.as_sent(item.measured_value),
                    unit=md_escape(item.measured_unit),
                )
            value, unit = self.quantity_parts(item.concept, item.value, item.comparator)
            return self.t("evidence", "lab").format(
                concept=self.concept(item.concept),
                value=value,
                unit=unit,
                date=self.date(item.when),
                measured=measured,
                code=item.code,
                ref=item.ref,
            )
        if isinstance(item, MedicationFact):
            authored = (
                self.t("evidence", "authored").format(date=self.date(item.authored))
                if item.authored
                else ""
            )
            return self.t("evidence", "medication").format(
                drug=self.drug(item),
                recorded=md_escape(item.display),
                status=self.common["medication_status"][item.status][self.lang],
                authored=authored,
                how=self.how(item),
                ref=item.ref,
            )
        if isinstance(item, RenalStatus):
            return self.t("evidence", "renal").format(renal_long=self.renal_long(item))
        if isinstance(item, CodedResult):
            shown = " ".join(item.text.split()) or ", ".join(sorted(item.flags)) or "?"
            return self.t("evidence", "coded").format(
                concept=self.concept(item.concept),
                value=md_escape(shown),
                date=self.date(item.when),
                code=item.code,
                ref=item.ref,
            )
        if isinstance(item, DataNote) and item.kind != "unit-not-recognised":
            return self.data_note(item)
        if isinstance(item, DataNote):
            return self.t("evidence", "note_unit").format(
                concept=self.concept(item.concept),
                date=self.date(item.when),
                unit=md_escape(item.detail),
                ref=item.ref,
            )
        return ""
