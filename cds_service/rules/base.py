"""What a rule returns: findings with their evidence, never card text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One rule fired.

    `variant` picks the card content (``cards/<rule>.yaml`` -> ``variants``); `facts` are the
    record facts the card text refers to by name (e.g. ``{"drug": MedicationFact, "renal":
    RenalStatus}``); `evidence` lists, in order, the record facts that made the rule fire.

    Set by the card set (rules/card_set.py), never by a rule: `also`, the other findings about
    the same order, shown in this finding's card; `quiet_unless_changed`, a standing
    interaction caution that patient-view shows only when its evidence changed.
    """

    rule: str
    variant: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    evidence: tuple[Any, ...] = ()
    also: tuple[Finding, ...] = ()
    quiet_unless_changed: bool = False
