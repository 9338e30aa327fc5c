"""Not saying the same thing twice.

- **Repeat suppression** (order hooks): a caution shown at order-select for a draft order is not
  repeated at order-sign for the same patient, encounter and drug, unless the order changed (its
  medication, dose, dispense request or the card's severity) or the window (1 hour) has passed.
- **Snooze** (patient-view): after a clinician overrides a card, the same card for the same
  patient is not shown again for a while, by the card's indicator, unless its evidence changed:
  with a reason given, 24 hours for a critical card (and only in the same encounter), 7 days for
  a warning, 30 days for an info card; without one (a plain "Dismiss"), 1 hour (same encounter),
  1 day and 7 days. All are settings (``CDS_SNOOZE_*``).
- **At most once in a while** (patient-view): a card whose rule has an interval (the calcinosis
  risk screening: 365 days, ``CDS_RISK_SCREENING_INTERVAL_DAYS``) is not shown again for the
  same patient until that long after it was last issued, whatever its evidence.
- **Evidence** is everything the card rests on: every fact in the finding's evidence and facts,
  field by field (a condition, a laboratory or coded result, an order, a procedure, the renal
  status, a data note...). Any change, a new result, another status, another order, ends the
  snooze.
- **Standing interactions** (patient-view, issue 12): an interaction caution between two drugs
  already active (rules/card_set.py marks it ``quiet_unless_changed``; never a critical one) is
  shown when its evidence fingerprint differs from the one last shown for this patient, order
  and rule: a first showing counts as changed, so it is shown once, then only when something
  changes (another dose, a new result, a new partner...). The order hooks show it whenever one
  of the two drugs is ordered.

All these memories live in the store, so they hold across workers and instances. Patients (and
encounters) appear there only as HMAC-SHA256 keys under ``CDS_HASH_KEY``; fingerprints are
SHA-256 digests of what a clinician would call "the same order" or "the same evidence".
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cds_service.fhir.record import MedicationFact
from cds_service.rules.base import Finding
from cds_service.settings import SNOOZE_INDICATORS, Settings
from cds_service.store import IssuedCard, Store

log = logging.getLogger(__name__)


def _sha256(value: Any) -> str:
    return hashlib.sha256(_FINGERPRINT_JSON.encode(value).encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


# What json.dumps(value, sort_keys=True, separators=(",", ":")[, default=_jsonable]) writes, with
# the encoder made once: a fingerprint must not change from one version to the next (a snooze
# would end), so the text hashed stays exactly the standard library's.
_FINGERPRINT_JSON = json.JSONEncoder(sort_keys=True, default=_jsonable, separators=(",", ":"))
_SORT_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


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


# The parts of a MedicationRequest that make it another order; the rest (meta, identifiers,
# notes) may change while the order stays the same.
ORDER_PARTS = (
    "medicationCodeableConcept",
    "medicationReference",
    "dosageInstruction",
    "dispenseRequest",
    "intent",
    "doNotPerform",
)


def canonical(value: Any, *, strict: bool = False) -> Any:
    """`value` as plain JSON data, field by field, for fingerprints.

    Every dataclass (the record's facts, the renal status, a terminology match...) counts with
    all its fields, named with its type; an order with its status, dates and the ORDER_PARTS of
    its resource. A value of any other kind raises TypeError when `strict` (tests), else counts
    by its repr (the fingerprint may then differ between calls: the card is shown, not hidden).
    """
    kind = type(value)
    # The common kinds first, by exact type (the same result as the general tests below); a
    # plain scalar inside them is taken as it is, without a call.
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {
            str(k): v if type(v) in _SCALARS else canonical(v, strict=strict)
            for k, v in value.items()
        }
    if kind is list or kind is tuple:
        return [v if type(v) in _SCALARS else canonical(v, strict=strict) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, MedicationFact):
        parts = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        resource = parts.pop("resource") or {}
        parts["order"] = {k: resource.get(k) for k in ORDER_PARTS}
        return [kind.__name__, canonical(parts, strict=strict)]
    names = _field_names(kind)
    if names is not None:
        fields = {name: getattr(value, name) for name in names}
        return [kind.__name__, canonical(fields, strict=strict)]
    if isinstance(value, Mapping):
        return {str(k): canonical(v, strict=strict) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted((canonical(v, strict=strict) for v in value), key=_SORT_JSON.encode)
    if isinstance(value, list | tuple):
        return [canonical(v, strict=strict) for v in value]
    if strict:
        raise TypeError(f"cannot fingerprint {type(value).__name__}")
    log.warning("fingerprint of an unknown kind of evidence: %s", type(value).__name__)
    return ["?", type(value).__name__, repr(value)]


_SCALARS = frozenset({type(None), bool, int, float, str})
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(kind: type) -> tuple[str, ...] | None:
    """The field names of a dataclass type (None for any other type), looked up once per type."""
    try:
        return _FIELD_NAMES[kind]
    except KeyError:
        names = None
        if dataclasses.is_dataclass(kind):
            names = tuple(f.name for f in dataclasses.fields(kind))
        _FIELD_NAMES[kind] = names
        return names


def evidence_fingerprint(finding: Finding, *, strict: bool = False) -> str:
    """The evidence a card rests on: its rule, variant, evidence and facts, in full, and those
    of the findings merged into its card (``also``). A new result, another status, another order
    or a new note changes it."""
    parts: list[Any] = [finding.rule, finding.variant, finding.evidence, finding.facts]
    if finding.also:  # a card of one finding keeps the fingerprint it always had
        parts.append([[a.rule, a.variant, a.evidence, a.facts] for a in finding.also])
    return _sha256(canonical(parts, strict=strict))


def override_explained(override_reason: Mapping[str, Any] | None) -> bool:
    """Did the clinician say why (a coded reason, or a comment)? A plain "Dismiss" does not."""
    if not isinstance(override_reason, Mapping):
        return False
    reason = override_reason.get("reason")
    coded = isinstance(reason, Mapping) and bool(reason.get("code") or reason.get("display"))
    comment = override_reason.get("userComment")
    return coded or (isinstance(comment, str) and bool(comment.strip()))


@dataclass(frozen=True)
class SnoozePolicy:
    """How long an overridden patient-view card stays hidden, by indicator and by whether a
    reason was given; for some indicators (critical by default) only within the encounter in
    which it was overridden."""

    with_reason: Mapping[str, timedelta]
    without_reason: Mapping[str, timedelta]
    encounter_bound: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> SnoozePolicy:
        return cls(
            {i: settings.snooze_for(i, reason=True) for i in SNOOZE_INDICATORS},
            {i: settings.snooze_for(i, reason=False) for i in SNOOZE_INDICATORS},
            frozenset(settings.snooze_encounter_bound),
        )

    def duration(self, indicator: str, *, reason: bool) -> timedelta:
        """An indicator this service does not issue is snoozed as a critical card."""
        durations = self.with_reason if reason else self.without_reason
        return durations.get(indicator, durations["critical"])

    def bound_to_encounter(self, indicator: str) -> bool:
        return indicator in self.encounter_bound or indicator not in SNOOZE_INDICATORS


class Suppression:
    def __init__(
        self,
        store: Store,
        hash_key: str,
        repeat_window: timedelta,
        snooze: SnoozePolicy,
        intervals: Mapping[str, timedelta] | None = None,
    ) -> None:
        self.store = store
        self._key = hash_key.encode()
        self.repeat_window = repeat_window
        self.snooze = snooze
        # rule id -> how long after its card was issued it stays unshown for that patient
        self.intervals = {r: d for r, d in (intervals or {}).items() if d > timedelta(0)}

    def _hmac(self, *parts: str) -> str:
        return hmac.new(self._key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    def subject_key(self, patient_id: str, finding: Finding) -> str:
        """The same card for the same patient: rule, and the order it is about (if any)."""
        drug = _drug(finding)
        target = drug.ref if drug else ""
        return self._hmac("card", patient_id, finding.rule, target)

    def encounter_key(self, patient_id: str, encounter_id: str) -> str | None:
        """The encounter a card was shown in (None when the call named none)."""
        return self._hmac("encounter", patient_id, encounter_id) if encounter_id else None

    def caution_key(self, patient_id: str, encounter_id: str, finding: Finding) -> str:
        """The same caution: patient, encounter, rule and drug (not the draft's id, which an EHR
        may renumber between order-select and order-sign)."""
        drug = _drug(finding)
        identity = ",".join(sorted(drug.valuesets)) if drug else ""
        return self._hmac("caution", patient_id, encounter_id, finding.rule, identity)

    def standing_key(self, patient_id: str, finding: Finding) -> str:
        """A standing interaction caution: patient, rule and the order it is about (in any
        encounter: it is quiet until its evidence changes, not for a while)."""
        drug = _drug(finding)
        return self._hmac("standing", patient_id, finding.rule, drug.ref if drug else "")

    def keys(self, patient_id: str) -> CallKeys:
        """A memo of the keys of one call's findings (see CallKeys)."""
        return CallKeys(self, patient_id)

    # ------------------------------------------------------------------ per hook

    def filter(
        self,
        hook: str,
        patient_id: str,
        encounter_id: str,
        findings: Iterable[Finding],
        now: datetime,
        keys: CallKeys | None = None,
    ) -> list[Finding]:
        """The findings to show; drops repeats at order-sign and snoozed cards at patient-view.
        `keys`: the call's memo (the engine uses its keys again for the issued-card log)."""
        findings = list(findings)
        keys = keys or self.keys(patient_id)
        if hook == "order-sign":
            kept = []
            for finding in findings:
                if self._shown_at_select(patient_id, encounter_id, finding, now):
                    log.info("suppressed repeat of %s at order-sign", finding.rule)
                else:
                    kept.append(finding)
            return kept
        if hook == "patient-view":
            findings = self._not_recently_issued(keys, findings, now)
            cards = [(keys.subject(f), keys.evidence(f)) for f in findings]
            encounter = self.encounter_key(patient_id, encounter_id)
            snoozed = self.store.snoozed(cards, now, encounter) if cards else set()
            for finding, card in zip(findings, cards, strict=True):
                if card in snoozed:
                    log.info("suppressed snoozed %s at patient-view", finding.rule)
            kept = [f for f, card in zip(findings, cards, strict=True) if card not in snoozed]
            return [f for f in kept if not self._standing_unchanged(keys, f)]
        return findings

    def _standing_unchanged(self, keys: CallKeys, finding: Finding) -> bool:
        """A standing interaction shown before with the same evidence."""
        if not finding.quiet_unless_changed:
            return False
        shown = self.store.caution(self.standing_key(keys.patient_id, finding))
        if shown is None or shown[0] != keys.evidence(finding):
            return False
        log.info("suppressed unchanged standing %s at patient-view", finding.rule)
        return True

    def _not_recently_issued(
        self, keys: CallKeys, findings: list[Finding], now: datetime
    ) -> list[Finding]:
        """Drop the findings of rules with an interval whose card this patient was issued
        within that interval."""
        timed = [f for f in findings if f.rule in self.intervals]
        if not timed:
            return findings
        recent: set[str] = set()
        for finding in timed:
            key = keys.subject(finding)
            recent |= self.store.issued_since([key], now - self.intervals[finding.rule])
        kept = []
        for finding in findings:
            if finding.rule in self.intervals and keys.subject(finding) in recent:
                log.info("suppressed %s: issued within its interval", finding.rule)
            else:
                kept.append(finding)
        return kept

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
        keys: CallKeys | None = None,
    ) -> None:
        """At order-select, remember the cautions shown about draft orders; at patient-view, the
        evidence of the standing interactions shown."""
        if hook == "patient-view":
            keys = keys or self.keys(patient_id)
            for finding in findings:
                if finding.quiet_unless_changed:
                    self.store.remember_caution(
                        self.standing_key(patient_id, finding), keys.evidence(finding), now
                    )
            return
        if hook != "order-select":
            return
        for finding in findings:
            if _drug(finding) is not None:
                self.store.remember_caution(
                    self.caution_key(patient_id, encounter_id, finding),
                    order_fingerprint(finding),
                    now,
                )

    def snooze_after_override(
        self, issued: IssuedCard, hook: str, now: datetime, *, reason: bool = True
    ) -> bool:
        """Snooze a patient-view card that a clinician overrode (`reason`: and said why), for
        as long as the policy gives its indicator; True when a snooze was set.

        A card bound to its encounter (critical by default) stays hidden only in the encounter
        it was shown in; a card shown without an encounter, for the time alone."""
        if hook != "patient-view" or not issued.subject_key or not issued.evidence_hash:
            return False
        duration = self.snooze.duration(issued.indicator, reason=reason)
        if duration <= timedelta(0):
            return False
        bound = self.snooze.bound_to_encounter(issued.indicator)
        self.store.add_snooze(
            issued.subject_key,
            issued.evidence_hash,
            now + duration,
            issued.uuid,
            encounter_key=issued.encounter_key if bound else None,
        )
        return True


class CallKeys:
    """The keys of one call's findings, each computed once: the subject key (an HMAC) and the
    evidence fingerprint (every fact the card rests on, field by field: the costly one), for the
    snooze look-up, the standing interactions and the issued-card log alike. Keyed by the
    finding's identity (the finding is kept, so its id is not reused during the call)."""

    def __init__(self, suppression: Suppression, patient_id: str) -> None:
        self.patient_id = patient_id
        self._suppression = suppression
        self._subjects: dict[int, tuple[Finding, str]] = {}
        self._evidence: dict[int, tuple[Finding, str]] = {}

    def subject(self, finding: Finding) -> str:
        known = self._subjects.get(id(finding))
        if known is None or known[0] is not finding:
            known = (finding, self._suppression.subject_key(self.patient_id, finding))
            self._subjects[id(finding)] = known
        return known[1]

    def evidence(self, finding: Finding) -> str:
        known = self._evidence.get(id(finding))
        if known is None or known[0] is not finding:
            known = (finding, evidence_fingerprint(finding))
            self._evidence[id(finding)] = known
        return known[1]
