"""Calcinosis type: when the picture suggests metastatic calcification or calciphylaxis.

Sources: seed 003 (calcinosis cutis, patient information): dystrophic calcinosis (connective-
tissue disease) has normal calcium and phosphate; metastatic calcification comes with abnormal
calcium / phosphate (chronic kidney failure, excess vitamin D, hyperparathyroidism,
sarcoidosis, milk-alkali syndrome); calciphylaxis occurs in kidney failure, transplant and
dialysis. Seed 000 (Smith, AAD 2019): IV sodium thiosulfate is used in uraemic calciphylaxis of
dialysis patients. Calcium x phosphate product > 70 mg2/dL2: Medscape / StatPearls
(knowledge/thresholds.yaml). Evidence level: descriptive.

When: active calcinosis and at least one of: calcium above range (a total calcium corrected for
an albumin of the same day, or the laboratory's albumin-corrected calcium, LOINC 29265-6, else
ionised calcium), phosphate above range, PTH above range or hyperparathyroidism on the problem
list, hypercalcaemia on the problem list, CKD G4-G5 or dialysis.
The calcium x phosphate product is supporting text, never the trigger: shown with the other
findings when above 70 mg2/dL2, computed only from a calcium and a phosphate of the same day
(KDIGO 2017 CKD-MBD guideline update, recommendation 3.1.5: individual values of calcium and
phosphate, evaluated together, rather than the Ca x P product). Albumin correction: Payne RB et
al., Br Med J 1973;4:643-6 (knowledge/thresholds.yaml, `calcinosis_type`).
Then: a `warning`: variant `dialysis` when CKD G4-G5 / dialysis is among the findings
(calciphylaxis to consider), otherwise `metastatic`; "order PTH" is suggested only when there
is no PTH result within `pth_recent_days` (issue 14).
"""

from __future__ import annotations

from typing import Any

from cds_service.fhir.record import LabResult
from cds_service.knowledge.chart import Chart
from cds_service.knowledge.loader import thresholds
from cds_service.knowledge.renal import RenalStatus
from cds_service.rules.base import Finding, Reads
from cds_service.rules.predicates import (
    CORRECTED_CALCIUM_LOINC,
    RENAL_READS,
    corrected_calcium,
    recent_lab,
    same_day,
)

RULE_ID = "calcinosis-type"
ADVANCED_CKD = frozenset({"G4", "G5", "G5D"})
READS = (
    Reads(
        observations=("calcium", "calcium-ionised", "phosphate", "pth", "albumin"),
        conditions=("calcinosis", "hyperparathyroidism", "hypercalcaemia"),
    )
    | RENAL_READS
)


def abnormalities(record: Chart) -> tuple[list[tuple[str, Any]], bool]:
    """What points away from dystrophic calcinosis, and whether renal failure is among it."""
    limits = thresholds()["calcinosis_type"]
    max_days = limits["max_age_days"]

    def recent(concept: str) -> Any:
        return recent_lab(record, concept, max_days)

    found: list[tuple[str, Any]] = []
    calcium = recent("calcium")
    albumin = recent("albumin")
    corrected = corrected_calcium(calcium, albumin) if calcium is not None else None
    if corrected is not None:
        if corrected.above_range:
            found.append(("hypercalcaemia-corrected", corrected))
            found.append(("albumin", albumin))
        calcium = corrected
    elif calcium is not None and calcium.above_range:
        key = "hypercalcaemia-lab-corrected" if calcium.code == CORRECTED_CALCIUM_LOINC else ""
        found.append((key or "hypercalcaemia", calcium))
    if not found:
        ionised = recent("calcium-ionised")
        if ionised is not None and ionised.above_range:
            found.append(("hypercalcaemia", ionised))
    phosphate = recent("phosphate")
    if phosphate is not None and phosphate.above_range:
        found.append(("hyperphosphataemia", phosphate))
    pth = recent("pth")
    if pth is not None and pth.above_range:
        found.append(("hyperparathyroidism-lab", pth))
    found += [("hyperparathyroidism", c) for c in record.conditions_in("hyperparathyroidism")]
    found += [("hypercalcaemia-coded", c) for c in record.conditions_in("hypercalcaemia")]
    renal = record.renal
    advanced = (
        renal.known and not renal.stale and (renal.dialysis or renal.category in ADVANCED_CKD)
    )
    if advanced:
        found.append(("renal", renal))
    # Supporting text only, from a same-day pair: never a finding on its own (KDIGO 3.1.5).
    if found and calcium is not None and phosphate is not None and same_day(calcium, phosphate):
        product = calcium.value * phosphate.value
        if product > limits["calcium_phosphate_product_above"]:
            found.append(("calcium-phosphate-product", (product, calcium, phosphate)))
    return found, advanced


def pth_missing(record: Chart) -> bool:
    """No PTH result within the work-up window: "order PTH" is worth suggesting."""
    days = thresholds()["calcinosis_type"]["pth_recent_days"]
    return recent_lab(record, "pth", days) is None


def evaluate(record: Chart) -> list[Finding]:
    calcinosis = record.conditions_in("calcinosis")
    if not calcinosis:
        return []
    found, advanced = abnormalities(record)
    if not found:
        return []
    evidence: list[Any] = [*calcinosis]
    for _kind, fact in found:
        evidence += list(fact[1:]) if isinstance(fact, tuple) else [fact]
    # A corrected calcium is listed as the result the laboratory sent.
    evidence = [
        record.labs["calcium"] if isinstance(e, LabResult) and e.concept == "calcium" else e
        for e in evidence
    ]
    renal = record.renal
    evidence += [e for e in (renal.condition, renal.lab) if advanced and e is not None]
    evidence += [n for n in record.notes if n.concept in ("calcium", "phosphate", "pth", "albumin")]
    return [
        Finding(
            RULE_ID,
            "dialysis" if advanced else "metastatic",
            # `missing`: the order-missing-labs suggestion offers PTH only when not recent.
            facts={
                "abnormalities": found,
                "renal": renal,
                "missing": ["pth-order"] if pth_missing(record) else [],
            },
            evidence=tuple(dict.fromkeys(e for e in evidence if not isinstance(e, RenalStatus))),
        )
    ]
