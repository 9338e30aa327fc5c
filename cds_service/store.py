"""Persisted state: every card issued (uuid -> service, rule, knowledge version), the feedback
clinicians give on them, the cautions shown at order-select (so order-sign does not repeat them)
and the snoozes that follow an override.

SQLite file by default, PostgreSQL when ``DATABASE_URL`` says so (``postgresql+psycopg://``).
The schema is created and migrated by cds_service/migrate.py (Alembic): a change to these
tables needs a revision in cds_service/migrations/versions. No patient data is stored: a card
is kept by its uuid, the rule and variant that produced it, the knowledge version and the
hookInstance; patients appear only as keyed hashes (HMAC, see cds_service/suppression.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement

from cds_service.migrate import SchemaVersionError as SchemaVersionError  # the guard's
from cds_service.migrate import ensure_current

metadata = MetaData()

issued_cards = Table(
    "issued_cards",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("service_id", String(128), nullable=False, index=True),
    Column("rule_id", String(128), nullable=False, index=True),
    Column("variant", String(64), nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("knowledge_version", String(32), nullable=False),
    Column("hook_instance", String(128), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False, index=True),  # pruning
    Column("subject_key", String(64), nullable=True),  # HMAC(patient, rule, order)
    Column("evidence_hash", String(64), nullable=True),
    Column("encounter_key", String(64), nullable=True),  # HMAC(patient, encounter); None: none
    # The other rules merged into this card (rules/card_set.py), comma-separated; None: none.
    Column("also_rules", String(512), nullable=True),
)

shown_cautions = Table(
    "shown_cautions",
    metadata,
    # HMAC(patient, encounter, rule, drug): a caution shown at order-select, fingerprint = what
    # the order said; or HMAC(patient, rule, order): a standing interaction shown at
    # patient-view, fingerprint = its evidence (suppression.py).
    Column("key", String(64), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("shown_at", DateTime(timezone=True), nullable=False, index=True),
)

snoozes = Table(
    "snoozes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_key", String(64), nullable=False, index=True),
    Column("evidence_hash", String(64), nullable=False),
    Column("until", DateTime(timezone=True), nullable=False, index=True),
    Column("card_uuid", String(36), nullable=False),
    # HMAC(patient, encounter): the snooze holds only in this encounter (None: any encounter).
    Column("encounter_key", String(64), nullable=True),
)


feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_uuid", String(36), nullable=False, index=True),
    Column("service_id", String(128), nullable=False),
    Column("rule_id", String(128), nullable=False, index=True),
    Column("knowledge_version", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", Text, nullable=True),  # JSON array of suggestion uuids
    Column("override_system", String(256), nullable=True),
    Column("override_code", String(128), nullable=True),
    Column("override_display", String(512), nullable=True),
    Column("outcome_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_FREE_BYTES = 10 * 1024 * 1024  # an SQLite disk with less is reported not ready
# Bounded waits inside the database driver too (the service's own deadline is shorter, see
# store_guard.py): a connection attempt, an SQLite lock, a PostgreSQL statement.
SQLITE_BUSY_SECONDS = 5
PG_CONNECT_SECONDS = 3
PG_STATEMENT_MS = 5000
JTI_SWEEP_INTERVAL = timedelta(minutes=1)  # expired jtis are deleted at most this often

# JWT ids already accepted (replay protection, see cds_service/trust.py): only a hash of
# iss + jti is kept, until the token could no longer be accepted anyway.
seen_jtis = Table(
    "seen_jtis",
    metadata,
    Column("key", String(64), primary_key=True),  # sha256(iss + "\x1f" + jti)
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


@dataclass(frozen=True)
class FeedbackEntry:
    """One clinician reaction to one card (the user's free-text comment is not kept: it may
    contain patient details)."""

    card_uuid: str
    service_id: str
    rule_id: str
    knowledge_version: str
    outcome: str
    accepted_suggestions: str | None
    override_system: str | None
    override_code: str | None
    override_display: str | None
    outcome_at: datetime
    received_at: datetime


@dataclass(frozen=True)
class IssuedCard:
    uuid: str
    service_id: str
    rule_id: str
    variant: str
    indicator: str
    knowledge_version: str
    hook_instance: str
    issued_at: datetime
    subject_key: str | None = None
    evidence_hash: str | None = None
    encounter_key: str | None = None  # the encounter it was shown in (None: not named)
    also_rules: str | None = None  # rules merged into the card, comma-separated (card_set.py)


@dataclass(frozen=True)
class RuleFeedback:
    """Feedback on one rule at one knowledge version, for knowledge maintainers."""

    rule_id: str
    knowledge_version: str
    issued: int
    accepted: int
    overridden: int
    override_reasons: list[dict[str, object]]


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(url: str) -> Engine:
    """An engine for `url`; an SQLite file's folder is created, and SQLite runs in WAL mode
    so several workers can write, with synchronous=NORMAL: a commit is not flushed to disk on
    its own (the WAL is, at each checkpoint), so a power loss may lose the last transactions
    (issued cards, feedback, snoozes: memories, never a clinical answer) but never corrupts the
    file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # (A "file:" URI names a file that must exist already: mode=ro, say.)
        if parsed.database and parsed.database != ":memory:" and "uri" not in parsed.query:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        if not parsed.database or parsed.database == ":memory:":
            # One in-memory database for every thread (the store guard's threads included).
            engine = create_engine(
                url, connect_args={"check_same_thread": False}, poolclass=StaticPool
            )
        else:
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit (see above)
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
            cursor.close()

        return engine
    # Options the URL already gives (a search_path...) are kept, the statement timeout added.
    given = parsed.query.get("options", "")
    options = " ".join(
        [*([given] if isinstance(given, str) else given), f"-c statement_timeout={PG_STATEMENT_MS}"]
    )
    return create_engine(
        parsed.difference_update_query(["options"]),
        pool_pre_ping=True,
        pool_timeout=PG_CONNECT_SECONDS,
        connect_args={"connect_timeout": PG_CONNECT_SECONDS, "options": options.strip()},
    )


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    def create_schema(self, migrate: bool = True) -> str:
        """Bring the schema to this version's revision (migrating it when behind and `migrate`)
        and return it; SchemaVersionError when it is newer, or behind and not `migrate`. Several
        workers may call it at once (see cds_service/migrate.py)."""
        return ensure_current(self.engine, migrate=migrate)

    def delete_batch(self, table_name: str, condition: ColumnElement[bool], limit: int) -> int:
        """Delete at most `limit` rows of a table that meet `condition` (retention.py), in one
        short transaction; how many were deleted."""
        table = metadata.tables[table_name]
        (key,) = table.primary_key.columns
        chosen = select(key).where(condition).limit(limit)
        with self.engine.begin() as conn:
            return conn.execute(delete(table).where(key.in_(chosen))).rowcount

    def write_problem(self) -> str | None:
        """Why the store cannot be written, or None: a read-only database (an SQLite file or a
        PostgreSQL standby), or an SQLite disk with less than 10 MB free."""
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                try:  # a row written and rolled back: a read-only file refuses it
                    with conn.begin() as probe:
                        conn.execute(
                            insert(seen_jtis).values(key="readiness-probe", expires_at=_EPOCH)
                        )
                        probe.rollback()
                except DBAPIError as exc:
                    return f"not writable: {type(exc.orig).__name__}"
                path = self.engine.url.database
                if path and path != ":memory:":
                    free = shutil.disk_usage(Path(path).expanduser().parent).free
                    if free < MIN_FREE_BYTES:
                        return f"disk almost full: {free // 1024} KiB free"
                return None
            read_only = conn.execute(text("SHOW transaction_read_only")).scalar()
            return "read-only (a standby?)" if read_only == "on" else None

    def healthy(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any database failure means "not healthy"
            return False
        return True

    def record_issued(self, cards: Iterable[IssuedCard]) -> None:
        rows = [card.__dict__ for card in cards]
        if not rows:
            return
        with self.engine.begin() as conn:
            conn.execute(insert(issued_cards), rows)

    def issued(self, card_uuid: str) -> IssuedCard | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(issued_cards).where(issued_cards.c.uuid == card_uuid))
                .mappings()
                .first()
            )
        return IssuedCard(**row) if row else None

    def issued_since(self, subject_keys: Iterable[str], since: datetime) -> set[str]:
        """Which of these subject keys (HMAC of patient and rule) had a card issued at or
        after `since`."""
        keys = set(subject_keys)
        if not keys:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(issued_cards.c.subject_key, issued_cards.c.issued_at).where(
                    issued_cards.c.subject_key.in_(keys)
                )
            ).all()
        return {r.subject_key for r in rows if as_utc(r.issued_at) >= since}

    def record_feedback(self, entries: Iterable[FeedbackEntry]) -> list[FeedbackEntry]:
        """Store feedback entries, all or none, once: an entry already stored (the same card,
        outcome and outcome time: a client that sends its feedback again) is not stored twice.
        Returns the entries stored by this call."""
        fresh: dict[tuple[str, str, datetime], FeedbackEntry] = {}
        for entry in entries:
            fresh.setdefault((entry.card_uuid, entry.outcome, as_utc(entry.outcome_at)), entry)
        if not fresh:
            return []
        with self.engine.begin() as conn:
            stored = conn.execute(
                select(feedback.c.card_uuid, feedback.c.outcome, feedback.c.outcome_at).where(
                    feedback.c.card_uuid.in_({uuid for uuid, _, _ in fresh})
                )
            ).all()
            for row in stored:
                fresh.pop((row.card_uuid, row.outcome, as_utc(row.outcome_at)), None)
            if fresh:
                conn.execute(insert(feedback), [entry.__dict__ for entry in fresh.values()])
        return list(fresh.values())

    def feedback_for(self, card_uuid: str) -> list[FeedbackEntry]:
        """The feedback stored on one card, in the order received. The service itself reads
        only `feedback_summary`; the tests read this to check what a feedback call stored."""
        columns = [c for c in feedback.c if c.name != "id"]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*columns).where(feedback.c.card_uuid == card_uuid).order_by(feedback.c.id)
            ).mappings()
            return [FeedbackEntry(**row) for row in rows]

    # ------------------------------------------------------------------ repeat suppression

    def remember_caution(self, key: str, fingerprint: str, at: datetime) -> None:
        """Record (or refresh) that a caution was shown for this patient, encounter and drug."""
        with self.engine.begin() as conn:
            updated = conn.execute(
                update(shown_cautions)
                .where(shown_cautions.c.key == key)
                .values(fingerprint=fingerprint, shown_at=at)
            )
            if updated.rowcount == 0:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(shown_cautions).values(
                                key=key, fingerprint=fingerprint, shown_at=at
                            )
                        )
                except DBAPIError:  # inserted meanwhile by another worker: refresh it
                    conn.execute(
                        update(shown_cautions)
                        .where(shown_cautions.c.key == key)
                        .values(fingerprint=fingerprint, shown_at=at)
                    )

    def caution(self, key: str) -> tuple[str, datetime] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(shown_cautions.c.fingerprint, shown_cautions.c.shown_at).where(
                    shown_cautions.c.key == key
                )
            ).first()
        return (row.fingerprint, as_utc(row.shown_at)) if row else None

    # ------------------------------------------------------------------ snoozes

    def add_snooze(
        self,
        subject_key: str,
        evidence_hash: str,
        until: datetime,
        card: str,
        encounter_key: str | None = None,
    ) -> None:
        """Hide this card until `until`; with `encounter_key`, only within that encounter."""
        with self.engine.begin() as conn:
            conn.execute(
                insert(snoozes).values(
                    subject_key=subject_key,
                    evidence_hash=evidence_hash,
                    until=until,
                    card_uuid=card,
                    encounter_key=encounter_key,
                )
            )

    def snoozed(
        self, cards: list[tuple[str, str]], now: datetime, encounter_key: str | None = None
    ) -> set[tuple[str, str]]:
        """Which of these (subject key, evidence hash) pairs are under a running snooze: not
        expired, and not bound to an encounter other than `encounter_key` (a call that names
        no encounter is not known to be another one)."""
        if not cards:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    snoozes.c.subject_key,
                    snoozes.c.evidence_hash,
                    snoozes.c.until,
                    snoozes.c.encounter_key,
                ).where(snoozes.c.subject_key.in_({key for key, _ in cards}))
            ).all()
        running = {
            (r.subject_key, r.evidence_hash)
            for r in rows
            if as_utc(r.until) > now
            and (
                r.encounter_key is None or encounter_key is None or r.encounter_key == encounter_key
            )
        }
        return running & set(cards)

    # ------------------------------------------------------------------ knowledge maintenance

    def feedback_summary(self, service_id: str) -> list[RuleFeedback]:
        """Issued / accepted / overridden counts and override reasons, per rule and version."""
        group = (issued_cards.c.rule_id, issued_cards.c.knowledge_version)
        with self.engine.connect() as conn:
            issued = {
                (r.rule_id, r.knowledge_version): r.n
                for r in conn.execute(
                    select(*group, func.count().label("n"))
                    .where(issued_cards.c.service_id == service_id)
                    .group_by(*group)
                )
            }
            outcomes: dict[tuple[str, str], dict[str, int]] = {}
            for r in conn.execute(
                select(
                    feedback.c.rule_id,
                    feedback.c.knowledge_version,
                    feedback.c.outcome,
                    func.count().label("n"),
                )
                .where(feedback.c.service_id == service_id)
                .group_by(feedback.c.rule_id, feedback.c.knowledge_version, feedback.c.outcome)
            ):
                outcomes.setdefault((r.rule_id, r.knowledge_version), {})[r.outcome] = r.n
            reasons: dict[tuple[str, str], list[dict[str, object]]] = {}
            reason_cols = (
                feedback.c.override_system,
                feedback.c.override_code,
                feedback.c.override_display,
            )
            for r in conn.execute(
                select(
                    feedback.c.rule_id,
                    feedback.c.knowledge_version,
                    *reason_cols,
                    func.count().label("n"),
                )
                .where(
                    feedback.c.service_id == service_id,
                    feedback.c.outcome == "overridden",
                    feedback.c.override_code.is_not(None),
                )
                .group_by(feedback.c.rule_id, feedback.c.knowledge_version, *reason_cols)
                .order_by(func.count().desc(), feedback.c.override_code)
            ):
                reasons.setdefault((r.rule_id, r.knowledge_version), []).append(
                    {
                        "system": r.override_system,
                        "code": r.override_code,
                        "display": r.override_display,
                        "count": r.n,
                    }
                )
        return [
            RuleFeedback(
                rule_id=rule,
                knowledge_version=version,
                issued=issued.get((rule, version), 0),
                accepted=outcomes.get((rule, version), {}).get("accepted", 0),
                overridden=outcomes.get((rule, version), {}).get("overridden", 0),
                override_reasons=reasons.get((rule, version), []),
            )
            for rule, version in sorted(set(issued) | set(outcomes))
        ]

    # ------------------------------------------------------------------ JWT replay protection

    def remember_jti(self, iss: str, jti: str, expires_at: datetime, now: datetime) -> bool:
        """True when this (iss, jti) was not seen before (it is then kept until `expires_at`),
        False when it is a replay. Safe across workers: the primary key decides, so of two
        concurrent calls with the same jti exactly one gets True. A key whose previous use has
        expired is taken over. Expired rows are swept when a new jti is stored (at most once a
        minute per Store)."""
        key = hashlib.sha256(f"{iss}\x1f{jti}".encode()).hexdigest()
        expires_at, now = as_utc(expires_at), as_utc(now)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(seen_jtis).values(key=key, expires_at=expires_at))
        except IntegrityError:
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(seen_jtis)
                    .where(seen_jtis.c.key == key, seen_jtis.c.expires_at <= now)
                    .values(expires_at=expires_at)
                )
            return taken.rowcount == 1
        swept_at: datetime | None = getattr(self, "_jtis_swept_at", None)
        if swept_at is None or not timedelta(0) <= now - swept_at < JTI_SWEEP_INTERVAL:
            self._jtis_swept_at = now
            # Best effort: another worker may be sweeping the same rows.
            with contextlib.suppress(DBAPIError), self.engine.begin() as conn:
                conn.execute(
                    delete(seen_jtis).where(seen_jtis.c.expires_at <= now, seen_jtis.c.key != key)
                )
        return True

    def dispose(self) -> None:
        self.engine.dispose()
