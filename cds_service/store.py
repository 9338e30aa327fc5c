"""Persisted state: every card issued (uuid -> service, rule, knowledge version) and the
feedback clinicians give on them.

SQLite file by default, PostgreSQL when ``DATABASE_URL`` says so (``postgresql+psycopg://``).
The schema is created on start. No patient data is stored: a card is kept by its uuid, the
rule and variant that produced it, the knowledge version and the hookInstance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
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
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

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
    Column("issued_at", DateTime(timezone=True), nullable=False),
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
    Column("received_at", DateTime(timezone=True), nullable=False),
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


def make_engine(url: str) -> Engine:
    """An engine for `url`; an SQLite file's folder is created, and SQLite runs in WAL mode
    so several workers can write."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    def create_schema(self) -> None:
        """Create missing tables. Several workers start at once: when another one creates a
        table between our check and our CREATE, the next pass finds it in place."""
        attempts = len(metadata.tables) + 1  # at worst one collision per table
        for attempt in range(attempts):
            try:
                metadata.create_all(self.engine)
                return
            except DBAPIError:
                if attempt == attempts - 1:
                    raise

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

    def record_feedback(self, entries: Iterable[FeedbackEntry]) -> None:
        """Store feedback entries, all or none."""
        rows = [entry.__dict__ for entry in entries]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(feedback), rows)

    def feedback_for(self, card_uuid: str) -> list[FeedbackEntry]:
        columns = [c for c in feedback.c if c.name != "id"]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*columns).where(feedback.c.card_uuid == card_uuid).order_by(feedback.c.id)
            ).mappings()
            return [FeedbackEntry(**row) for row in rows]

    def dispose(self) -> None:
        self.engine.dispose()
