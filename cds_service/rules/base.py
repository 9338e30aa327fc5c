"""What a rule returns (findings with their evidence, never card text), and what it reads."""

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


@dataclass(frozen=True)
class Reads:
    """What a rule reads from the chart, by FHIR resource type: the value sets of the
    Observations (laboratory results, vital signs, coded results), Conditions,
    MedicationRequests and Procedures, and whether it reads the Patient (sex, birth date).
    Each service must prefetch what its rules read (tests/hooks/test_prefetch_coverage.py)."""

    observations: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    medications: tuple[str, ...] = ()
    procedures: tuple[str, ...] = ()
    patient: bool = False

    def __or__(self, other: Reads) -> Reads:
        def union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(dict.fromkeys((*a, *b)))

        return Reads(
            union(self.observations, other.observations),
            union(self.conditions, other.conditions),
            union(self.medications, other.medications),
            union(self.procedures, other.procedures),
            self.patient or other.patient,
        )
