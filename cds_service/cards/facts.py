"""What each fact of a finding fills in its card's text: fact key -> placeholders.

A finding names its record facts by key (``{"drug": MedicationFact, "renal": RenalStatus}``,
rules/base.py). `FACT_TEXT` says, for each key, the value type it takes and the `{placeholders}`
of a variant's summary and detail it fills; a number under any other key (a row's `params` in
knowledge/safety.yaml: `{limit}`) fills the placeholder of its own name. The renderer reads this
table, never a rule id, so a rule whose facts use these keys needs no renderer edit; the card
library checks every placeholder of a card file against it at load time (cards/library.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cds_service.fhir.record import MedicationFact
from cds_service.knowledge.renal import RenalStatus

if TYPE_CHECKING:
    from cds_service.cards.text import Formatter


@dataclass(frozen=True)
class FactText:
    """How one fact key fills a card text: the placeholders it may fill, and how (a value of
    another type than `kind` fills nothing)."""

    fills: tuple[str, ...]
    text: Callable[[Formatter, Any], Mapping[str, str]]
    kind: type | tuple[type, ...] = object


def _order(name: str, kind: str) -> FactText:
    """An order (`drug`, or the `other` drug of an interaction): product, name, salts, caveat,
    and whether it is a draft or an active order."""

    def text(fmt: Formatter, order: MedicationFact) -> dict[str, str]:
        salts = order.match.salts
        return {
            name: fmt.product(order),
            f"{name}_name": fmt.drug(order),
            f"{name}_salts": fmt.ingredients(salts) if salts else fmt.drug(order),
            f"{name}_note": fmt.product_note(order),
            kind: fmt.t("order_kind", "draft" if order.draft else "active"),
        }

    return FactText(
        (name, f"{name}_name", f"{name}_salts", f"{name}_note", kind), text, MedicationFact
    )


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _factors(fmt: Formatter, factors: Any) -> dict[str, str]:
    lines = [fmt.risk_factor(key, params) for key, params in factors]
    return {
        "factors": _bullets(lines),
        "factor_count": str(len(lines)),
        "risk_factors": fmt.count("risk_factors", len(lines)),
    }


def _missing(fmt: Formatter, missing: Any) -> dict[str, str]:
    return {
        "missing": ", ".join(fmt.concept(m) for m in missing),
        "missing_short": fmt.alternatives([fmt.t("short_test", m) for m in missing]),
    }


def _check(fmt: Formatter, rule: str) -> dict[str, str]:
    """The rule a check-failed card is about, by its card's title."""
    content = fmt.library.cards.get(rule)
    return {"check": content.data["title"][fmt.lang] if content else rule}


def _features(fmt: Formatter, features: Any) -> dict[str, str]:
    """One step per lesion feature, from the card's own `steps`."""
    steps = fmt.card_steps or {}
    lines = [steps[f][fmt.lang] for f in features if f in steps]
    return {"steps": _bullets(lines), "step_count": fmt.count("steps", len(lines))}


def _context(fmt: Formatter, context: str) -> dict[str, str]:
    """The card's own `context` line for the disease behind the finding."""
    if not fmt.card_context:
        return {}
    return {"context": fmt.card_context[context][fmt.lang].strip()}


def _notes(fmt: Formatter, notes: Any) -> dict[str, str]:
    return {"notes_summary": fmt.notes_summary(tuple(notes))} if notes else {}


def _abnormalities(fmt: Formatter, found: Any) -> dict[str, str]:
    return {"abnormalities": _bullets([fmt.abnormality(key, fact) for key, fact in found])}


FACT_TEXT: dict[str, FactText] = {
    "drug": _order("drug", "order_kind"),
    "other": _order("other", "other_kind"),
    "renal": FactText(
        ("renal_short", "renal_long"),
        lambda fmt, renal: {
            "renal_short": fmt.renal_short(renal),
            "renal_long": fmt.renal_long(renal),
        },
        RenalStatus,
    ),
    "criterion": FactText(("criterion",), lambda fmt, fact: {"criterion": fmt.criterion(fact)}),
    "disease": FactText(("disease",), lambda fmt, vs: {"disease": fmt.concept(vs)}, str),
    "factors": FactText(("factors", "factor_count", "risk_factors"), _factors),
    "missing": FactText(("missing", "missing_short"), _missing),
    "check": FactText(("check",), _check, str),
    "features": FactText(("steps", "step_count"), _features),
    "context": FactText(("context",), _context, str),
    "notes": FactText(("notes_summary",), _notes),
    "abnormalities": FactText(("abnormalities",), _abnormalities),
    # A daily dose as read from the order's dosage instructions (prednisone-equivalent mg).
    "daily_dose": FactText(
        ("daily_dose",),
        lambda fmt, mg: {"daily_dose": fmt.as_sent(round(float(mg), 1))},
        (int, float),
    ),
}
# Every placeholder a fact key may fill (numbers under other keys fill their own name).
FILLED = frozenset(name for entry in FACT_TEXT.values() for name in entry.fills)


def is_number(value: Any) -> bool:
    """A number that fills the placeholder of its key (bool is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def fact_values(fmt: Formatter, facts: Mapping[str, Any]) -> dict[str, str]:
    """The placeholders `facts` fill, as text in the formatter's language."""
    values = {
        key: fmt.as_sent(float(value))
        for key, value in facts.items()
        if key not in FACT_TEXT and is_number(value)
    }
    for key, entry in FACT_TEXT.items():
        if key in facts and isinstance(facts[key], entry.kind):
            values.update(entry.text(fmt, facts[key]))
    return values
