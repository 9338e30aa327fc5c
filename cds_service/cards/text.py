"""Locale-aware text of record facts: numbers, units, dates, renal phrases, lists in a sentence.

Every phrase comes from cards/_common.yaml (or the card file's own `steps` and `context`); this
module only picks the phrase and fills it. Text that comes from the EHR (displays, free-text
orders) is escaped before it enters Markdown, so a record cannot inject markup into a card.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from cds_service.cards.facts import fact_values
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
from cds_service.rules.coherence import Withheld
from cds_service.terminology.medicines import ingredient_title

if TYPE_CHECKING:
    from cds_service.cards.library import CardLibrary

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~&])")


def md_escape(text: str) -> str:
    """Escape EHR-provided text for GitHub-flavoured Markdown (no links, HTML or emphasis)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


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


class Formatter:
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
        """The placeholders of a card text, filled from a finding's facts (cards/facts.py)."""
        return fact_values(self, facts)

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
