"""Data the checks could not use, put in front of the clinician: silence must never read as
"safe" (issue 11, "Lenient with data, strict with the protocol").

A resource the rules would read that is not valid R4 even after coercion, an order whose
medication cannot be identified, and a prefetched search that had more pages than could be
fetched are left out of the reasoning and become record notes. Each note is shown on the card
it concerns (a renal-function note is part of the renal evidence of a treatment-safety card);
a "possibly incomplete" note goes on every card; whatever no card carries is shown on one
`data-not-read` info card.
"""

from __future__ import annotations

from dataclasses import replace

from cds_service.fhir.record import DataNote
from cds_service.knowledge.chart import Chart
from cds_service.rules.base import Finding

DATA_NOT_READ = "data-not-read"
# Notes about data that was left out (unit notes are shown by the rules that read the lab).
LEFT_OUT = frozenset({"unreadable", "unidentified-order", "incomplete"})


def attach(findings: list[Finding], record: Chart) -> list[Finding]:
    """The findings, with "possibly incomplete" notes added to each, and a `data-not-read`
    finding for left-out data that no finding already shows."""
    incomplete = tuple(n for n in record.notes if n.kind == "incomplete")
    if incomplete:
        findings = [replace(f, evidence=(*f.evidence, *incomplete)) for f in findings]
    shown = {e for f in findings for e in f.evidence if isinstance(e, DataNote)}
    pending = tuple(n for n in record.notes if n.kind in LEFT_OUT and n not in shown)
    if not pending:
        return findings
    return [*findings, Finding(DATA_NOT_READ, "not-read", {"notes": pending}, pending)]
