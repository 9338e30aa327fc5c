"""Not saying the same thing twice.

- **Repeat suppression** (order hooks): a caution shown at order-select for a draft order is not
  repeated at order-sign for the same patient, encounter and drug, unless the order changed (its
  medication, dose, dispense request or the card's severity) or the window (1 hour) has passed.
- **Snooze** (patient-view): after a clinician overrides a card, the same card for the same
  patient is not shown again for the snooze period (30 days), unless its evidence changed (a new
  result, another status, another order).

Both memories live in the store, so they hold across workers and instances. Patients appear
there only as HMAC-SHA256 keys under ``CDS_HASH_KEY``; fingerprints are SHA-256 digests of what
a clinician would call "the same order" or "the same evidence".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from cds_service.fhir.record import ConditionFact, DataNote, LabResult, MedicationFact
from cds_service.rules.base import Finding
from cds_service.store import IssuedCard, Store

log = logging.getLogger(__name__)


def _sha256(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, default=_jsonable, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def _drug(finding: Finding) -> MedicationFact | None:
    drug = finding.facts.get("drug")
    return drug if isinstance(drug, MedicationFact) else None


def order_fingerprint(finding: Finding) -> str:
    """What the order says: the card's severity, the medication, the dose and the quantity."""
    drug = _drug(finding)
    resource = drug.resource if drug else {}
    return _sha256(
        {
            "variant": finding.variant,
            "medication": resource.get("medicationCodeableConcept")
            or resource.get("medicationReference"),
            "dosage": resource.get("dosageInstruction"),
            "dispense": resource.get("dispenseRequest"),
        }
    )


def _evidence_item(item: Any) -> Any:
    if isinstance(item, ConditionFact):
        return ["condition", item.ref, item.valuesets, item.clinical_status, item.since]
    if isinstance(item, LabResult):
        return ["lab", item.ref, item.concept, round(item.value, 3), item.when]
    if isinstance(item, MedicationFact):
        resource = item.resource
        dose = resource.get("dosageInstruction")
        return ["medication", item.ref, item.status, item.valuesets, dose]
    if isinstance(item, DataNote):
        return ["note", item.ref, item.kind, item.detail]
    return ["other", type(item).__name__]


def evidence_fingerprint(finding: Finding) -> str:
    """The evidence a card rests on; a new result or another status changes it."""
    return _sha256([finding.variant, [_evidence_item(e) for e in finding.evidence]])


class Suppression:
    def __init__(
        self, store: Store, hash_key: str, repeat_window: timedelta, snooze: timedelta
    ) -> None:
        self.store = store
        self._key = hash_key.encode()
        self.repeat_window = repeat_window
        self.snooze = snooze

    def _hmac(self, *parts: str) -> str:
        return hmac.new(self._key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    def subject_key(self, patient_id: str, finding: Finding) -> str:
        """The same card for the same patient: rule, and the order it is about (if any)."""
        drug = _drug(finding)
        target = drug.ref if drug else ""
        return self._hmac("card", patient_id, finding.rule, target)

    def caution_key(self, patient_id: str, encounter_id: str, finding: Finding) -> str:
        """The same caution: patient, encounter, rule and drug (not the draft's id, which an EHR
        may renumber between order-select and order-sign)."""
        drug = _drug(finding)
        identity = ",".join(sorted(drug.valuesets)) if drug else ""
        return self._hmac("caution", patient_id, encounter_id, finding.rule, identity)

    # ------------------------------------------------------------------ per hook

    def filter(
        self,
        hook: str,
        patient_id: str,
        encounter_id: str,
        findings: Iterable[Finding],
        now: datetime,
    ) -> list[Finding]:
        """The findings to show; drops repeats at order-sign and snoozed cards at patient-view."""
        findings = list(findings)
        if hook == "order-sign":
            kept = []
            for finding in findings:
                if self._shown_at_select(patient_id, encounter_id, finding, now):
                    log.info("suppressed repeat of %s at order-sign", finding.rule)
                else:
                    kept.append(finding)
            return kept
        if hook == "patient-view":
            cards = [(self.subject_key(patient_id, f), evidence_fingerprint(f)) for f in findings]
            snoozed = self.store.snoozed(cards, now)
            for finding, card in zip(findings, cards, strict=True):
                if card in snoozed:
                    log.info("suppressed snoozed %s at patient-view", finding.rule)
            return [f for f, card in zip(findings, cards, strict=True) if card not in snoozed]
        return findings

    def _shown_at_select(
        self, patient_id: str, encounter_id: str, finding: Finding, now: datetime
    ) -> bool:
        if _drug(finding) is None:
            return False
        shown = self.store.caution(self.caution_key(patient_id, encounter_id, finding))
        if shown is None:
            return False
        fingerprint, at = shown
        return fingerprint == order_fingerprint(finding) and now - at < self.repeat_window

    def remember(
        self,
        hook: str,
        patient_id: str,
        encounter_id: str,
        findings: Iterable[Finding],
        now: datetime,
    ) -> None:
        """At order-select, remember the cautions shown about draft orders."""
        if hook != "order-select":
            return
        for finding in findings:
            if _drug(finding) is not None:
                self.store.remember_caution(
                    self.caution_key(patient_id, encounter_id, finding),
                    order_fingerprint(finding),
                    now,
                )

    def snooze_after_override(self, issued: IssuedCard, hook: str, now: datetime) -> bool:
        """Snooze a patient-view card that a clinician overrode; True when a snooze was set."""
        if hook != "patient-view" or not issued.subject_key or not issued.evidence_hash:
            return False
        self.store.add_snooze(
            issued.subject_key, issued.evidence_hash, now + self.snooze, issued.uuid
        )
        return True
