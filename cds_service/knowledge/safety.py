"""The treatment-safety table (knowledge/safety.yaml): its grammar, its model and its loader.

The criteria grammar is defined once, here: `CRITERIA` names every criterion a row may use,
the shape of its argument (checked at load time), the value sets it names and the laboratory
concepts it reads (for the start-up check that every value set exists and the test that every
concept a rule reads is prefetched). How a criterion is evaluated is the rules layer's
(cds_service/rules/treatment_safety.py maps each name to a function and refuses, at import, a
grammar it does not evaluate exactly): knowledge sits below rules and may not import them
(tests/test_layers.py), so the names live here and the functions there.

Read once per process and checked: unknown criteria or malformed arguments, rows naming drugs
or partners the rule does not check, rules without sources, references to thresholds that do
not exist (a row whose card is critical must also name its label contraindication in
``label``: a test holds it). A value written ``$section.key`` is read from thresholds.yaml (so a
window or a limit lives in one place).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.knowledge.loader import thresholds

TABLE_FILE = Path(__file__).resolve().parent / "safety.yaml"
# The value sets the renal status is read from: laboratory concepts, coded conditions and
# procedures (knowledge/renal.py).
RENAL_LABS = ("egfr", "creatinine")
RENAL_CONDITIONS = (
    "dialysis",
    "ckd-stage-3",
    "ckd-stage-4",
    "ckd-stage-5",
    "renal-insufficiency-unstaged",
    "kidney-transplant",
)
RENAL_PROCEDURES = ("dialysis-procedure", "kidney-transplant-procedure")
# Upper bound of the eGFR (mL/min/1.73 m2) that a coded stage implies.
CODED_STAGE_BOUND: Mapping[str | None, float] = {"G5D": 0, "G5": 14, "G4": 29, "G3": 59, None: 59}
# The routes a row may be limited to (`route`).
ROUTES = ("oral", "parenteral")
# The units a row's daily-dose limit may be written in (`min_daily_dose`, `unread_daily_dose`).
DOSE_UNITS = ("prednisone_mg",)


# --------------------------------------------------------------------------- grammar

Check = Callable[[Any], str | None]  # what is wrong with an argument, or None


def _number(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else f"a number, not {value!r}"


def _true(value: Any) -> str | None:
    return None if value is True else f"true, not {value!r}"


def _valuesets(value: Any) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    return None if ok else f"a list of value set ids, not {value!r}"


def _concept(value: Any) -> str | None:
    return None if isinstance(value, str) and value else f"a concept id, not {value!r}"


def _fields(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    """A mapping with these keys, each of its shape."""
    optional = optional or {}

    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"a mapping, not {value!r}"
        missing = set(required) - set(value)
        extra = set(value) - set(required) - set(optional)
        if missing or extra:
            return f"keys {sorted(required)} (and optionally {sorted(optional)})"
        for key, item in value.items():
            problem = {**required, **optional}[key](item)
            if problem:
                return f"{key}: {problem}"
        return None

    return check


_LAB = _fields({"concept": _concept, "value": _number, "max_age_days": _number})


@dataclass(frozen=True)
class Criterion:
    """One word of the table's grammar: what its argument looks like, the condition value sets
    it names, the laboratory concepts it reads, and whether it reads the renal status."""

    argument: str  # the shape, as the table's header and docs/knowledge.md say it
    check: Check
    conditions: Callable[[Any], tuple[str, ...]] = lambda value: ()
    labs: Callable[[Any], tuple[str, ...]] = lambda value: ()
    renal: bool = False
    nested: bool = False  # its argument is a list of criteria (any / all)


CRITERIA: Mapping[str, Criterion] = {
    "renal_below": Criterion("N", _number, renal=True),
    "renal_below_inclusive": Criterion("N", _number, renal=True),
    "renal_stale": Criterion("true", _true, renal=True),
    "renal_unknown": Criterion("true", _true, renal=True),
    "condition": Criterion("[value set ids]", _valuesets, conditions=tuple),
    "current_condition": Criterion(
        "{condition: [ids], max_age_days, unless_lab_at_least: {concept, value, max_age_days}}",
        _fields(
            {"condition": _valuesets, "max_age_days": _number},
            {
                "unless_lab_at_least": _fields(
                    {"concept": _concept, "value": _number}, {"max_age_days": _number}
                )
            },
        ),
        conditions=lambda value: tuple(value["condition"]),
        labs=lambda value: (
            (value["unless_lab_at_least"]["concept"],) if "unless_lab_at_least" in value else ()
        ),
    ),
    "lab_below": Criterion(
        "{concept, value, max_age_days}", _LAB, labs=lambda value: (value["concept"],)
    ),
    # Issue 14 (calcium and vitamin D in calcinosis): the latest calcium above the laboratory's
    # range, a total calcium corrected for a same-day albumin (rules/predicates.py
    # `high_calcium`). No criterion reads the calcium x phosphate product: KDIGO 2017 3.1.5
    # judges calcium and phosphate individually (calcinosis-type shows the product as context).
    "calcium_above_range": Criterion(
        "{max_age_days}",
        _fields({"max_age_days": _number}),
        labs=lambda value: ("calcium", "calcium-ionised", "albumin"),
    ),
    # Issue 14 (hypocalcaemia before a bisphosphonate): the latest calcium below the
    # laboratory's range (referenceRange.low, or flagged L / LL), a total calcium corrected for
    # a same-day albumin (rules/predicates.py `low_calcium`).
    "calcium_below_range": Criterion(
        "{max_age_days}",
        _fields({"max_age_days": _number}),
        labs=lambda value: ("calcium", "calcium-ionised", "albumin"),
    ),
    # Issue 14 (aluminium with a low phosphate): the latest result of a concept within
    # max_age_days below the laboratory's range (referenceRange.low, or flagged L / LL;
    # fhir/facts.py `LabResult.below_range`). Generic: the concept is any laboratory value set.
    "lab_below_range": Criterion(
        "{concept, max_age_days}",
        _fields({"concept": _concept, "max_age_days": _number}),
        labs=lambda value: (value["concept"],),
    ),
    # The latest result of a concept within max_age_days above the laboratory's range (its
    # reference range high, or flagged H / HH): the mirror of lab_below_range.
    "lab_above_range": Criterion(
        "{concept, max_age_days}",
        _fields({"concept": _concept, "max_age_days": _number}),
        labs=lambda value: (value["concept"],),
    ),
    # The latest result of a concept within max_age_days at or above a value (canonical unit).
    "lab_at_least": Criterion(
        "{concept, value, max_age_days}", _LAB, labs=lambda value: (value["concept"],)
    ),
    # No readable result of a concept (quantitative or qualitative) within max_age_days: a
    # screening or a monitoring test that the record does not show (hepatitis B serology before
    # rituximab, electrolytes before an infusion). What could not be read is its evidence.
    "no_recent_result": Criterion(
        "{concept, max_age_days}",
        _fields({"concept": _concept, "max_age_days": _number}),
        labs=lambda value: (value["concept"],),
    ),
    # Issue 14 (glucocorticoids in SSc): the latest result of a qualitative concept (an
    # antibody) is positive: flagged positive, positive words, or a value above its range
    # (rules/predicates.py `is_positive`).
    "positive_result": Criterion(
        "{concept}", _fields({"concept": _concept}), labs=lambda value: (value["concept"],)
    ),
    "partner": Criterion("true", _true),
    # Issue 14 (minocycline and autoimmune syndromes): true only at an order hook (draft orders
    # under review), for a precaution to read when prescribing, not at every chart opening.
    "at_order": Criterion("true", _true),
    "any": Criterion("[criteria]", lambda value: None, nested=True),
    "all": Criterion("[criteria]", lambda value: None, nested=True),
}


def walk(when: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every (criterion, argument) of a row's criterion, the nested ones of any / all
    included."""
    found: list[tuple[str, Any]] = []
    for key, value in when.items():
        found.append((key, value))
        if key in CRITERIA and CRITERIA[key].nested:
            for sub in value:
                found += walk(sub)
    return found


def _check_criterion(where: str, when: Any) -> None:
    if not isinstance(when, Mapping) or not when:
        raise ValueError(f"safety.yaml {where}: a criterion is a mapping of criteria")
    unknown = set(when) - set(CRITERIA)
    if unknown:
        raise ValueError(f"safety.yaml {where}: unknown criteria {sorted(unknown)}")
    for key, value in when.items():
        criterion = CRITERIA[key]
        if criterion.nested:
            if not isinstance(value, list) or not value:
                raise ValueError(f"safety.yaml {where}.{key}: expected a list of criteria")
            for i, sub in enumerate(value):
                _check_criterion(f"{where}.{key}[{i}]", sub)
            continue
        problem = criterion.check(value)
        if problem:
            raise ValueError(f"safety.yaml {where}.{key}: expected {problem}")


@dataclass(frozen=True)
class Row:
    when: Mapping[str, Any]
    variant: str
    drug: str | None = None
    params: Mapping[str, Any] | None = None
    partners: tuple[str, ...] = ()  # interaction rows: only with these partners
    # A critical row names the label contraindication it applies (docs/knowledge.md lists them).
    label: str | None = None
    # "oral": only an order that is not for a parenteral form (ibandronate is both a tablet and
    # an injection); "parenteral": only an order for one (rules/predicates.py is_parenteral).
    route: str | None = None
    # Issue 14 (glucocorticoids): only an order whose daily dose, read from its dosage
    # instructions and converted to `prednisone_mg`, is at least this (rules/predicates.py
    # `daily_dose_at_least`) ...
    min_daily_dose: Mapping[str, float] | None = None
    # ... or whose daily dose cannot be shown to be below this: unreadable, or a dose without
    # its frequency that reads below it (`daily_dose_unread`).
    unread_daily_dose: Mapping[str, float] | None = None


def _dose_limit(where: str, key: str, value: Any) -> Mapping[str, float] | None:
    """A row's daily-dose limit, checked: {unit: number}, the unit one of DOSE_UNITS."""
    if value is None:
        return None
    ok = (
        isinstance(value, Mapping)
        and len(value) == 1
        and all(unit in DOSE_UNITS and _number(n) is None for unit, n in value.items())
    )
    if not ok:
        raise ValueError(f"safety.yaml {where}: {key} is {{unit: N}}, the unit one of {DOSE_UNITS}")
    return dict(value)


@dataclass(frozen=True)
class SafetyRule:
    id: str
    drugs: tuple[str, ...]
    rows: tuple[Row, ...]
    sources: tuple[str, ...]
    partners: tuple[str, ...] = ()

    @property
    def interaction(self) -> bool:
        return bool(self.partners)

    def condition_valuesets(self) -> set[str]:
        """The condition value sets its rows name."""
        return {
            vs
            for row in self.rows
            for key, value in walk(row.when)
            for vs in CRITERIA[key].conditions(value)
        }

    def lab_concepts(self) -> set[str]:
        """The laboratory concepts its rows read (the renal status's ones included)."""
        found = set()
        for row in self.rows:
            for key, value in walk(row.when):
                found.update(CRITERIA[key].labs(value))
                if CRITERIA[key].renal:
                    found.update(RENAL_LABS)
        return found

    @property
    def reads_renal(self) -> bool:
        return any(CRITERIA[key].renal for row in self.rows for key, _ in walk(row.when))


def resolve(where: str, value: Any) -> Any:
    """The value with every ``$section.key`` string replaced by that threshold."""
    if isinstance(value, Mapping):
        return {k: resolve(f"{where}.{k}", v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(f"{where}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith("$"):
        found: Any = thresholds()
        for part in value[1:].split("."):
            if not isinstance(found, Mapping) or part not in found:
                raise ValueError(f"safety.yaml {where}: no threshold {value} in thresholds.yaml")
            found = found[part]
        return found
    return value


@cache
def load_table(path: Path = TABLE_FILE) -> dict[str, SafetyRule]:
    """The table, checked (unknown criteria or arguments, rows naming a drug the rule does not
    check)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    table = {}
    for rule_id, spec in data["rules"].items():
        drugs = tuple(spec["drugs"])
        rows = []
        for i, row in enumerate(spec["rows"]):
            where = f"{rule_id}.rows[{i}]"
            when = resolve(where, row["when"])
            _check_criterion(where, when)
            if row.get("drug") and row["drug"] not in drugs:
                raise ValueError(f"safety.yaml {rule_id}.rows[{i}]: drug not in the rule's drugs")
            if row.get("route") not in (None, *ROUTES):
                raise ValueError(f"safety.yaml {rule_id}.rows[{i}]: route is one of {ROUTES}")
            row_partners = tuple(row.get("partners", ()))
            if set(row_partners) - set(spec.get("partners", ())):
                raise ValueError(f"safety.yaml {rule_id}.rows[{i}]: partners not in the rule's")
            rows.append(
                Row(
                    when,
                    row["variant"],
                    row.get("drug"),
                    resolve(where, row.get("params")),
                    row_partners,
                    row.get("label"),
                    row.get("route"),
                    _dose_limit(where, "min_daily_dose", resolve(where, row.get("min_daily_dose"))),
                    _dose_limit(
                        where, "unread_daily_dose", resolve(where, row.get("unread_daily_dose"))
                    ),
                )
            )
        if not spec.get("sources"):
            raise ValueError(f"safety.yaml {rule_id}: every rule cites its sources")
        partners = tuple(spec.get("partners", ()))
        if (spec.get("type") == "interaction") != bool(partners):
            raise ValueError(f"safety.yaml {rule_id}: interactions, and only they, have partners")
        table[rule_id] = SafetyRule(rule_id, drugs, tuple(rows), tuple(spec["sources"]), partners)
    return table


def table_valuesets() -> set[str]:
    """Every value set the table names (drugs, partners, conditions)."""
    names: set[str] = set()
    for rule in load_table().values():
        names.update(rule.drugs, rule.partners, rule.condition_valuesets())
    return names
