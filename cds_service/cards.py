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
from collections.abc import Mapping
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

    def render(self, finding: Finding, lang: str, patient_id: str) -> dict[str, Any]:
        content = self.library.cards[finding.rule]
        variant = content.variant(finding.variant)
        fmt = _Formatter(self.library, lang, content.data.get("steps"))
        values = fmt.values(finding.facts)
        summary = " ".join(variant["summary"][lang].format_map(values).split())
        if len(summary) > SUMMARY_MAX:
            summary = summary[: SUMMARY_MAX - 1].rstrip() + "…"
        card: dict[str, Any] = {
            "uuid": str(uuid.uuid4()),
            "summary": summary,
            "indicator": variant["indicator"],
            "detail": self._detail(content, variant, finding, fmt, values),
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
        suggestions = [
            s
            for key in variant.get("suggestions") or ()
            for s in self._suggestions(content, key, variant, finding, lang, patient_id)
        ]
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "any"
        if reasons := content.data.get("override_reasons"):
            card["overrideReasons"] = [
                {"system": OVERRIDE_SYSTEM, "code": r["code"], "display": r["display"][lang]}
                for r in reasons
            ]
        if links := content.data.get("links"):
            card["links"] = [
                {"label": link["label"][lang], "url": link["url"], "type": "absolute"}
                for link in links
            ]
        return card

    # ------------------------------------------------------------------ parts

    def _detail(
        self,
        content: CardContent,
        variant: Mapping[str, Any],
        finding: Finding,
        fmt: _Formatter,
        values: Mapping[str, str],
    ) -> str:
        lang = fmt.lang
        heads = self.common["headings"]
        parts = [variant["detail"][lang].format_map(values).strip()]
        lines = [f"- {fmt.evidence(item)}" for item in finding.evidence]
        lines = [line for line in lines if line != "- "]
        if lines:
            parts.append(f"**{heads['evidence'][lang]}**\n\n" + "\n".join(lines))
        level = content.data["evidence_level"][lang]
        parts.append(f"**{heads['evidence_level'][lang]}**{heads['colon'][lang]}{level}")
        if refs := content.data.get("references"):
            items = "\n".join(f"- {r[lang]}" for r in refs)
            parts.append(f"**{heads['references'][lang]}**\n\n{items}")
        footer = heads["footer"][lang].format(rule=finding.rule, version=self.library.version)
        parts.append(f"_{footer}_")
        return "\n\n".join(parts)

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
        if "feature" in spec and spec["feature"] not in finding.facts.get("features", ()):
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


class _Formatter:
    """Locale-aware formatting of record facts for one card."""

    def __init__(
        self, library: CardLibrary, lang: str, card_steps: Mapping[str, Any] | None = None
    ) -> None:
        self.library = library
        self.common = library.common
        self.lang = lang
        self.card_steps = card_steps  # the card's `steps` (lesion features), if any

    def t(self, *path: str) -> str:
        node: Any = self.common
        for key in path:
            node = node[key]
        return node[self.lang]

    def number(self, value: float, decimals: int) -> str:
        text = f"{value:.{decimals}f}"
        return text.replace(".", ",") if self.lang == "fr" else text

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
        if "missing" in facts:
            values["missing"] = ", ".join(self.concept(m) for m in facts["missing"])
        if isinstance(facts.get("check"), str):  # the rule a check-failed card is about
            rule = self.library.cards.get(facts["check"])
            values["check"] = rule.data["title"][self.lang] if rule else facts["check"]
        if "features" in facts:
            steps = self.card_steps or {}
            lines = [steps[f][self.lang] for f in facts["features"] if f in steps]
            values["steps"] = "\n".join(f"- {line}" for line in lines)
        if facts.get("notes"):
            values["notes_summary"] = self.notes_summary(tuple(facts["notes"]))
        if "abnormalities" in facts:
            lines = [self.abnormality(key, fact) for key, fact in facts["abnormalities"]]
            values["abnormalities"] = "\n".join(f"- {line}" for line in lines)
        return values

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
        return {
            "value": self.number(lab.value, units.decimals(lab.concept)),
            "unit": lab.unit,
            "date": self.date(lab.when),
        }

    def abnormality(self, key: str, fact: Any) -> str:
        if key == "calcium-phosphate-product":
            product, _calcium, _phosphate = fact
            return self.t("abnormality", key).format(value=self.number(product, 0))
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
            return self.t("renal", "short_coded").format(category=f"CKD {renal.category}")
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
            since = (
                self.t("evidence", "since").format(date=self.date(renal.date)) if renal.date else ""
            )
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
                creatinine=self.comparator(renal.lab.comparator) + self.number(renal.lab.value, 2),
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
            since = (
                self.t("evidence", "since").format(date=self.date(older.since))
                if older.since
                else ""
            )
            text += self.t("renal", "instead_of_coded").format(
                display=md_escape(older.display), since=since
            )
        return self.t("renal", "stale").format(lab=text) if renal.stale else text

    # ---------------------------------------------------------------- evidence

    def evidence(self, item: Any) -> str:
        if isinstance(item, ConditionFact):
            status = item.verification_status
            if status not in self.common["condition_status"]:
                status = item.clinical_status
            label = self.common["condition_status"].get(status, {}).get(self.lang, status)
            since = (
                self.t("evidence", "since").format(date=self.date(item.since)) if item.since else ""
            )
            return self.t("evidence", "condition").format(
                display=md_escape(item.display),
                status=label,
                since=since,
                how=self.how(item),
                ref=item.ref,
            )
        if isinstance(item, LabResult):
            decimals = units.decimals(item.concept)
            measured = ""
            if item.measured_unit and item.measured_value != item.value:
                measured = self.t("evidence", "lab_measured_as").format(
                    value=self.comparator(item.comparator)
                    + self.number(
                        item.measured_value, 0 if item.measured_value.is_integer() else 2
                    ),
                    unit=md_escape(item.measured_unit),
                )
            return self.t("evidence", "lab").format(
                concept=self.concept(item.concept),
                value=self.comparator(item.comparator) + self.number(item.value, decimals),
                unit=item.unit,
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
