"""Persisted state: the record of every card issued (uuid -> service, rule, knowledge version).

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
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url

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
        metadata.create_all(self.engine)

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

    def dispose(self) -> None:
        self.engine.dispose()
