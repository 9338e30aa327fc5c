"""The decision pipeline of one CDS Hooks call, independent of the web framework.

request -> hook call (hooks/call.py) -> prefetch -> chart -> rules -> cards -> issued-card log.

Knowledge (value sets, card content, service definitions, schemas) is loaded once when the
engine is built; nothing per request depends on the size of the knowledge base.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service import rules
from cds_service.cards import INDICATORS, Renderer, load_library, proposed_valuesets
from cds_service.errors import InputError, NotFound, PrefetchUnavailable, StoreUnavailable
from cds_service.fhir import prefetch
from cds_service.fhir.client import FhirFetcher
from cds_service.fhir.coerce import parse_datetime
from cds_service.fhir.record import Located, warm_up
from cds_service.hooks.call import parse_call, require
from cds_service.hooks.services import ServiceDefinition, load_services
from cds_service.knowledge.chart import build_chart
from cds_service.knowledge.loader import thresholds
from cds_service.knowledge.safety import table_valuesets
from cds_service.observability import Metrics, create_metrics
from cds_service.retention import Retention
from cds_service.rules import card_set, coherence, data_notes, info_card
from cds_service.rules.base import Finding
from cds_service.settings import DEVELOPMENT_HASH_KEY, Settings
from cds_service.store import FeedbackEntry, IssuedCard, Store
from cds_service.store_guard import GuardedStore
from cds_service.suppression import (
    CallKeys,
    SnoozePolicy,
    Suppression,
    override_explained,
)
from cds_service.terminology import Terminology

log = logging.getLogger(__name__)
MAX_FEEDBACK_ENTRIES = 100  # as the feedback schema's maxItems


@dataclass(frozen=True)
class Evaluation:
    """The response body, and what was issued (for logs and metrics)."""

    body: dict[str, Any]
    issued: tuple[IssuedCard, ...]


class CdsEngine:
    def __init__(self, settings: Settings, store: Store | GuardedStore) -> None:
        self.settings = settings
        # The store as the calls see it: bounded waits, never a reason to withhold a card.
        self.store = (
            store
            if isinstance(store, GuardedStore)
            else GuardedStore(
                store,
                deadline=settings.store_deadline_ms / 1000,
                retry_after=settings.store_retry_seconds,
                buffer_limit=settings.issued_buffer,
                auto_migrate=settings.auto_migrate,
            )
        )
        self.terminology = Terminology.load()
        self.library = load_library(settings.cards_dir, self.terminology)
        self.renderer = Renderer(self.library)
        self.services: dict[str, ServiceDefinition] = load_services(
            self.terminology, known_rules=rules.RULES
        )
        needed = {r for s in self.services.values() for r in s.rules} | set(rules.SERVICE_CARDS)
        missing = needed - set(self.library.cards)
        if missing:
            raise ValueError(f"no card content for rules {sorted(missing)} in cards/")
        unknown = table_valuesets() - set(self.terminology.valuesets)
        if unknown:
            raise ValueError(f"knowledge/safety.yaml names unknown value sets {sorted(unknown)}")
        thresholds()  # read once now, not during the first request
        warm_up()
        self.suppression = Suppression(
            self.store,
            settings.hash_key,
            timedelta(minutes=settings.repeat_window_minutes),
            SnoozePolicy.from_settings(settings),
            intervals={
                info_card.RISK_SCREENING: timedelta(days=settings.risk_screening_interval_days)
            },
        )
        if settings.hash_key == DEVELOPMENT_HASH_KEY:
            log.warning("CDS_HASH_KEY is not set: using the development key")
        self.hooks = {s.id: s.hook for s in self.services.values()}  # service id -> hook
        # Prometheus metrics (None with CDS_METRICS=off): label values come from this catalogue.
        self.metrics: Metrics | None = create_metrics(self.hooks) if settings.metrics else None
        if self.metrics is not None:
            self.store.on_fallback = self.metrics.store_fallback
            self.metrics.build_info(self.knowledge_version)
            self.store.on_pruned = self.metrics.store_pruned
        retention = Retention.from_settings(settings)
        self.store.schedule_prune(
            lambda: retention.prune(self.store, settings.now()),
            settings.prune_interval.total_seconds(),
        )
        self.fetcher = FhirFetcher(
            settings.fhir_timeout_ms / 1000,
            settings.fhir_deadline_ms / 1000,
            settings.fhir_page_limit,
            observer=self.metrics.fetched if self.metrics is not None else None,
            max_query_bytes=settings.fhir_max_query_bytes,
            max_call_bytes=settings.fhir_max_call_bytes,
        )

    def close(self) -> None:
        """Release connections (FHIR client, database pool)."""
        self.fetcher.close()
        self.store.dispose()

    @property
    def knowledge_version(self) -> str:
        return self.library.version

    def discovery(self) -> dict[str, Any]:
        version = self.knowledge_version
        return {"services": [s.discovery(version) for s in self.services.values()]}

    def service(self, service_id: str) -> ServiceDefinition:
        service = self.services.get(service_id)
        if service is None:
            raise NotFound("no CDS service with this id; see GET /cds-services", path="id")
        return service

    def evaluate(
        self,
        service_id: str,
        body: Mapping[str, Any],
        lang: str,
        fhir_servers: tuple[str, ...] | None = None,
    ) -> Evaluation:
        """Run one hook call; raise InputError (with its status) on bad input.

        `fhir_servers` are the FHIR servers this caller's data may be fetched from (the
        authenticated issuer's); by default, the configured ones."""
        service = self.service(service_id)
        call = parse_call(body, service.id, service.hook)
        patient_id = call.patient_id

        policy = prefetch.FetchPolicy(
            self.fetcher,
            self.settings.fhir_servers if fhir_servers is None else fhir_servers,
            require_https=self.settings.production,
        )
        try:
            found = prefetch.resolve(service.prefetch, body, policy)
        except PrefetchUnavailable as exc:
            if exc.unsent is not None and self.metrics is not None:
                for key in exc.keys:  # nothing was sent: the fetcher saw no query to count
                    self.metrics.fetched(key, exc.unsent, None)
            raise
        now = self.settings.now()
        drafts = (
            [Located(d.path, d.resource) for d in call.drafts] if call.drafts is not None else None
        )
        record = build_chart(
            found.resources, patient_id, self.terminology, now, drafts, found.notes
        )
        if record.patient.deceased:  # no advice about a deceased patient (issue 11)
            return Evaluation({"cards": []}, ())
        encounter_id = call.encounter_id
        composed = info_card.compose(service.hook, rules.run(service.rules, record))
        fired = data_notes.attach(composed, record)
        # One safety card per order; standing interactions quiet at patient-view (issue 12).
        fired = card_set.compose(
            fired,
            service.hook,
            self.renderer.indicator,
            quiet_standing=self.settings.quiet_standing_interactions,
        )
        keys = self.suppression.keys(patient_id)  # each finding's keys computed once
        findings = self._unrepeated(service.hook, patient_id, encounter_id, fired, now, keys)

        # No card proposes a drug the patient takes or the safety table flags (issue 12): only
        # the drugs the cards of this response may propose are checked.
        shown = {rule for f in findings for rule in (f.rule, *(a.rule for a in f.also))}
        proposable = proposed_valuesets(self.library, shown)
        withheld = coherence.withheld_proposals(record, proposable) if proposable else {}
        findings, cards = self._rendered(findings, lang, patient_id, withheld)
        # Most urgent first; among equals, by rule id (a stable order EHRs can rely on).
        order = sorted(
            range(len(cards)),
            key=lambda i: (INDICATORS.index(cards[i]["indicator"]), findings[i].rule),
        )
        encounter_key = self.suppression.encounter_key(patient_id, encounter_id)
        issued = tuple(
            IssuedCard(
                uuid=cards[i]["uuid"],
                service_id=service.id,
                rule_id=findings[i].rule,
                variant=findings[i].variant,
                indicator=cards[i]["indicator"],
                knowledge_version=self.knowledge_version,
                hook_instance=call.hook_instance,
                issued_at=now,
                subject_key=keys.subject(findings[i]),
                evidence_hash=keys.evidence(findings[i]),
                encounter_key=encounter_key,
                also_rules=",".join(a.rule for a in findings[i].also) or None,
            )
            for i in order
        )
        self._record(issued)
        try:
            self.suppression.remember(service.hook, patient_id, encounter_id, findings, now, keys)
        except StoreUnavailable:
            pass  # the outage was logged once by the store guard
        except Exception as exc:  # noqa: BLE001 - memory is best effort
            log.error("could not remember cautions: %s", type(exc).__name__)
        return Evaluation({"cards": [cards[i] for i in order]}, issued)

    def _rendered(
        self,
        findings: list[Finding],
        lang: str,
        patient_id: str,
        withheld: Mapping[str, coherence.Withheld],
    ) -> tuple[list[Finding], list[dict[str, Any]]]:
        """Each finding's card. A card that cannot be rendered is contained like a rule that
        raises (rules.run): logged by rule id and exception type only, and replaced by one
        `check-failed` card per rule it carried; the other cards are kept."""
        shown: list[Finding] = []
        failed: list[str] = []  # the rules whose card could not be rendered, each once
        cards: list[dict[str, Any]] = []
        for finding in findings:
            try:
                card = self.renderer.render(finding, lang, patient_id, withheld)
            except Exception as exc:  # noqa: BLE001 - one card's failure is contained
                log.error(
                    "card of rule %s could not be rendered: %s", finding.rule, type(exc).__name__
                )
                lost = (finding.rule, *(a.rule for a in finding.also))
                failed += [rule_id for rule_id in dict.fromkeys(lost) if rule_id not in failed]
            else:
                shown.append(finding)
                cards.append(card)
        for rule_id in failed:
            check = Finding(rules.CHECK_FAILED, "rule-error", facts={"check": rule_id})
            shown.append(check)
            cards.append(self.renderer.render(check, lang, patient_id, withheld))
        return shown, cards

    def _unrepeated(
        self,
        hook: str,
        patient_id: str,
        encounter_id: str,
        findings: list[Finding],
        now: datetime,
        keys: CallKeys,
    ) -> list[Finding]:
        """Drop repeats and snoozed cards; if the store cannot say, show everything."""
        try:
            return self.suppression.filter(hook, patient_id, encounter_id, findings, now, keys)
        except StoreUnavailable:
            return findings  # failing open; the outage was logged once by the store guard
        except Exception as exc:  # noqa: BLE001 - failing open: a clinician sees the card
            log.error("could not check repeats or snoozes: %s", type(exc).__name__)
            return findings

    def feedback_summary(self, service_id: str) -> dict[str, Any]:
        """Accepted / overridden counts and override reasons per rule, for maintainers."""
        service = self.service(service_id)
        return {
            "service": service.id,
            "rules": [
                {
                    "rule": r.rule_id,
                    "knowledgeVersion": r.knowledge_version,
                    "issued": r.issued,
                    "accepted": r.accepted,
                    "overridden": r.overridden,
                    "overrideReasons": r.override_reasons,
                }
                for r in self.store.feedback_summary(service.id)
            ],
        }

    def receive_feedback(self, service_id: str, body: Mapping[str, Any]) -> int:
        """Validate and store a CDS Hooks feedback body; return how many entries were stored.

        Every entry must name a card this service issued; nothing is stored unless all are valid.
        """
        service = self.service(service_id)
        entries_sent = body.get("feedback")
        if isinstance(entries_sent, list) and len(entries_sent) > MAX_FEEDBACK_ENTRIES:
            # Refused before any entry is read (the schema says the same, entry by entry).
            raise InputError(
                f"at most {MAX_FEEDBACK_ENTRIES} feedback entries per call", path="feedback"
            )
        require("feedback", body)
        received = self.settings.now()
        entries = []
        for i, item in enumerate(body["feedback"]):
            issued = self.store.issued(item["card"], patient=True)
            if issued is None or issued.service_id != service.id:
                raise InputError(
                    f"this card was not issued by {service.id}",
                    path=f"feedback[{i}].card",
                )
            reason = (item.get("overrideReason") or {}).get("reason") or {}
            accepted = [s["id"] for s in item.get("acceptedSuggestions") or ()]
            entries.append(
                FeedbackEntry(
                    card_uuid=issued.uuid,
                    service_id=service.id,
                    rule_id=issued.rule_id,
                    knowledge_version=issued.knowledge_version,
                    outcome=item["outcome"],
                    accepted_suggestions=json.dumps(accepted) if accepted else None,
                    override_system=reason.get("system"),
                    override_code=reason.get("code"),
                    override_display=reason.get("display"),
                    outcome_at=_timestamp(item["outcomeTimestamp"], f"feedback[{i}]"),
                    received_at=received,
                )
            )
        stored = self.store.record_feedback(entries)  # StoreUnavailable: 503, nothing stored
        for entry, item in zip(entries, body["feedback"], strict=True):
            if entry.outcome == "overridden" and entry in stored:  # not again for a resend
                issued = self.store.issued(entry.card_uuid, patient=True)
                assert issued is not None
                explained = override_explained(item.get("overrideReason"))
                try:
                    self.suppression.snooze_after_override(
                        issued, service.hook, received, reason=explained
                    )
                except StoreUnavailable:
                    log.warning("feedback stored, but its snooze could not be: store unavailable")
        return len(entries)

    def _record(self, issued: tuple[IssuedCard, ...]) -> None:
        """Keep the issued-card log; a store failure must not withhold cards from a clinician."""
        try:
            self.store.record_issued(issued)
        except Exception as exc:  # noqa: BLE001
            log.error("could not record %d issued card(s): %s", len(issued), type(exc).__name__)


def _timestamp(value: str, at: str) -> datetime:
    """An RFC 3339 date-time, in UTC (the schema checked its shape, not that the day exists)."""
    parsed = parse_datetime(value.upper())  # RFC 3339 allows a lower-case "t" and "z"
    if parsed is None:
        raise InputError("outcomeTimestamp is not a date-time", path=f"{at}.outcomeTimestamp")
    return parsed
