"""Calcinosis type: when the picture suggests metastatic calcification or calciphylaxis.

Sources: seed 003 (calcinosis cutis, patient information): dystrophic calcinosis (connective-
tissue disease) has normal calcium and phosphate; metastatic calcification comes with abnormal
calcium / phosphate (chronic kidney failure, excess vitamin D, hyperparathyroidism,
sarcoidosis, milk-alkali syndrome); calciphylaxis occurs in kidney failure, transplant and
dialysis. Seed 000 (Smith, AAD 2019): IV sodium thiosulfate is used in uraemic calciphylaxis of
dialysis patients. Calcium x phosphate product > 70 mg2/dL2: Medscape / StatPearls
(knowledge/thresholds.yaml). Evidence level: descriptive.

When: active calcinosis and at least one of: calcium or ionised calcium above range, phosphate
above range, calcium x phosphate product above 70 mg2/dL2, PTH above range or
hyperparathyroidism on the problem list, hypercalcaemia on the problem list, CKD G4-G5 or
dialysis.
Then: a `warning`: variant `dialysis` when CKD G4-G5 / dialysis is among the findings
(calciphylaxis to consider), otherwise `metastatic`.
"""

from __future__ import annotations

from typing import Any

from cds_service.knowledge.chart import Chart
from cds_service.knowledge.loader import thresholds
from cds_service.knowledge.renal import RenalStatus
from cds_service.rules.base import Finding, Reads
from cds_service.rules.predicates import RENAL_READS, recent_lab

RULE_ID = "calcinosis-type"
ADVANCED_CKD = frozenset({"G4", "G5", "G5D"})
READS = (
    Reads(
        observations=("calcium", "calcium-ionised", "phosphate", "pth"),
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
    for concept in ("calcium", "calcium-ionised"):
        lab = recent(concept)
        if lab is not None and lab.above_range:
            found.append(("hypercalcaemia", lab))
            break
    phosphate = recent("phosphate")
    if phosphate is not None and phosphate.above_range:
        found.append(("hyperphosphataemia", phosphate))
    calcium = recent("calcium")
    if calcium is not None and phosphate is not None:
        product = calcium.value * phosphate.value
        if product > limits["calcium_phosphate_product_above"]:
            found.append(("calcium-phosphate-product", (product, calcium, phosphate)))
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
    return found, advanced


def evaluate(record: Chart) -> list[Finding]:
    calcinosis = record.conditions_in("calcinosis")
    if not calcinosis:
        return []
    found, advanced = abnormalities(record)
    if not found:
        return []
    evidence: list[Any] = [*calcinosis]
    for _kind, fact in found:
        if isinstance(fact, tuple):
            evidence += [fact[1], fact[2]]
        else:
            evidence.append(fact)
    renal = record.renal
    evidence += [e for e in (renal.condition, renal.lab) if advanced and e is not None]
    evidence += [n for n in record.notes if n.concept in ("calcium", "phosphate", "pth")]
    return [
        Finding(
            RULE_ID,
            "dialysis" if advanced else "metastatic",
            facts={"abnormalities": found, "renal": renal},
            evidence=tuple(dict.fromkeys(e for e in evidence if not isinstance(e, RenalStatus))),
        )
    ]
