"""Aluminium hydroxide in renal insufficiency.

Sources: seed 002 ("Hydroxyde d'aluminium": 30 mL four times a day reported in SSc calcinosis;
use with caution in renal insufficiency, since aluminium accumulates, with severe phosphate
depletion and osteomalacia or secondary osteoporosis). KDIGO 2009 CKD-MBD guideline,
recommendation 4.1.6 (grade 1C): avoid long-term aluminium-containing phosphate binders in CKD
stages 3-5D (as tabulated by Ketteler, Int J Nephrol 2011), kept in the KDIGO 2017 update as
recommendation 4.1.7 (CKD G3a-G5D). Thresholds: knowledge/thresholds.yaml.

When: an aluminium hydroxide order (at patient-view an active or on-hold MedicationRequest; at
order-select / order-sign a draft order under review), and
- dialysis, CKD G4-G5, or eGFR below 30 mL/min/1.73 m2          -> variant "severe" (critical)
- CKD G3 or unstaged renal insufficiency, or eGFR 30-59          -> variant "moderate" (warning)
- last eGFR / creatinine older than 12 months (nothing coded)    -> variant "stale" (warning),
  unless that old eGFR was below 30: "severe" (a G4-G5 eGFR rarely recovers; the card shows
  the result's date and says it is over 12 months old)
- no renal information at all                                    -> variant "unknown" (warning)
Silent when the eGFR is recent and 60 or more.
One finding per aluminium hydroxide order; its card names the order and acts on it.
"""

from __future__ import annotations

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.loader import thresholds
from cds_service.knowledge.renal import RenalStatus
from cds_service.rules.base import Finding

RULE_ID = "aluminium-hydroxide-renal"


def renal_variant(renal: RenalStatus) -> str | None:
    """Which card a renal status calls for with aluminium hydroxide, or None (no concern)."""
    limits = thresholds()["aluminium_hydroxide_renal"]
    if renal.dialysis or renal.category in ("G5D", "G5", "G4"):
        return "severe"
    if renal.source == "coded":
        return "moderate"  # CKD G3, or renal insufficiency recorded without a stage
    if not renal.known:
        return "unknown"
    if renal.stale:
        return "stale"
    assert renal.egfr is not None
    if renal.egfr < limits["critical_below_egfr"]:
        return "severe"
    if renal.egfr < limits["warning_below_egfr"]:
        return "moderate"
    return None


def evaluate(record: PatientRecord) -> list[Finding]:
    orders = record.orders_in("aluminium-hydroxide")
    if not orders:
        return []
    variant = renal_variant(record.renal)
    if variant is None:
        return []
    renal_evidence = [e for e in (record.renal.condition, record.renal.lab) if e is not None]
    return [
        Finding(
            RULE_ID,
            variant,
            facts={"drug": order, "renal": record.renal},
            evidence=(order, *renal_evidence, *record.notes),
        )
        for order in orders
    ]
