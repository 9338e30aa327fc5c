"""The treatment-safety table (knowledge/safety.yaml): its model and its loader.

Read once per process and checked: unknown criteria, rows naming drugs or partners the rule
does not check, rules without sources. The engine that applies it is
cds_service/rules/treatment_safety.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TABLE_FILE = Path(__file__).resolve().parent / "safety.yaml"
CRITERIA = frozenset(
    {
        "renal_below",
        "renal_below_inclusive",
        "renal_stale",
        "renal_unknown",
        "condition",
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


@cache
def load_table(path: Path = TABLE_FILE) -> dict[str, SafetyRule]:
    """The table, checked (unknown criteria, rows naming a drug the rule does not check)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    table = {}
    for rule_id, spec in data["rules"].items():
        drugs = tuple(spec["drugs"])
        rows = []
        for i, row in enumerate(spec["rows"]):
            _check_criterion(f"{rule_id}.rows[{i}]", row["when"])
            if row.get("drug") and row["drug"] not in drugs:
                raise ValueError(f"safety.yaml {rule_id}.rows[{i}]: drug not in the rule's drugs")
            row_partners = tuple(row.get("partners", ()))
            if set(row_partners) - set(spec.get("partners", ())):
                raise ValueError(f"safety.yaml {rule_id}.rows[{i}]: partners not in the rule's")
            rows.append(
                Row(row["when"], row["variant"], row.get("drug"), row.get("params"), row_partners)
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
        for key in ("any", "all"):
            for sub in when.get(key, ()):
                walk(sub)

    for rule in load_table().values():
        names.update(rule.drugs, rule.partners)
        for row in rule.rows:
            walk(row.when)
    return names
