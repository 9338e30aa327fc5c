"""The treatment-safety table (knowledge/safety.yaml): its model and its loader.

Read once per process and checked: unknown criteria, rows naming drugs or partners the rule
does not check, rules without sources, references to thresholds that do not exist (a row
whose card is critical must also name its label contraindication in ``label``: a test holds
it). A value written ``$section.key`` is read from thresholds.yaml
(so a window or a limit lives in one place). The engine that applies it is
cds_service/rules/treatment_safety.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.knowledge.loader import thresholds

TABLE_FILE = Path(__file__).resolve().parent / "safety.yaml"
CRITERIA = frozenset(
    {
        "renal_below",
        "renal_below_inclusive",
        "renal_stale",
        "renal_unknown",
        "condition",
        "current_condition",
        "lab_below",
        "partner",
        "any",
        "all",
    }
)
# Upper bound of the eGFR (mL/min/1.73 m2) that a coded stage implies.
CODED_STAGE_BOUND: Mapping[str | None, float] = {"G5D": 0, "G5": 14, "G4": 29, "G3": 59, None: 59}


@dataclass(frozen=True)
class Row:
    when: Mapping[str, Any]
    variant: str
    drug: str | None = None
    params: Mapping[str, Any] | None = None
    partners: tuple[str, ...] = ()  # interaction rows: only with these partners
    # A critical row names the label contraindication it applies (docs/knowledge.md lists them).
    label: str | None = None


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


def _check_criterion(where: str, when: Mapping[str, Any]) -> None:
    unknown = set(when) - CRITERIA
    if unknown:
        raise ValueError(f"safety.yaml {where}: unknown criteria {sorted(unknown)}")
    for key in ("any", "all"):
        for i, sub in enumerate(when.get(key, ())):
            _check_criterion(f"{where}.{key}[{i}]", sub)


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
    """The table, checked (unknown criteria, rows naming a drug the rule does not check)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    table = {}
    for rule_id, spec in data["rules"].items():
        drugs = tuple(spec["drugs"])
        rows = []
        for i, row in enumerate(spec["rows"]):
            where = f"{rule_id}.rows[{i}]"
            _check_criterion(where, row["when"])
            when = resolve(where, row["when"])
            if row.get("drug") and row["drug"] not in drugs:
                raise ValueError(f"safety.yaml {rule_id}.rows[{i}]: drug not in the rule's drugs")
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

    def walk(when: Mapping[str, Any]) -> None:
        names.update(when.get("condition", ()))
        names.update(when.get("current_condition", {}).get("condition", ()))
        for key in ("any", "all"):
            for sub in when.get(key, ()):
                walk(sub)

    for rule in load_table().values():
        names.update(rule.drugs, rule.partners)
        for row in rule.rows:
            walk(row.when)
    return names
