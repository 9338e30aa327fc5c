"""How long the store keeps what it keeps, and the prune that deletes the rest (issue 15).

Every hook call adds rows (issued cards, cautions); without a limit the store grows for ever.
`Retention` says what is old enough to go, table by table (CDS_RETAIN_*; 0 keeps it for
ever); `Retention.prune` deletes it in short batches, so a big prune never holds a lock for
long. Run by each worker every CDS_PRUNE_INTERVAL (store_guard.py) and by
`calcinosis-cds prune`.

Pruning never changes an answer the service owes: cautions are kept at least the repeat window
(CDS_REPEAT_WINDOW_MINUTES), the cards of a rule shown at most once in a while (the risk
screening) at least that while, snoozes until they have ended, JWT ids until they expire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

from cds_service.rules.info_card import RISK_SCREENING
from cds_service.settings import Settings
from cds_service.store import as_utc, feedback, issued_cards, seen_jtis, shown_cautions, snoozes

BATCH = 500  # rows per delete: a few milliseconds of lock with the time indexes (0002)
TABLES = ("issued_cards", "feedback", "shown_cautions", "snoozes", "seen_jtis")


class Deletes(Protocol):
    """A Store, or the GuardedStore that runs each batch within its bounds."""

    def delete_batch(self, table_name: str, condition: ColumnElement[bool], limit: int) -> int: ...


@dataclass(frozen=True)
class Retention:
    issued: timedelta
    feedback: timedelta
    cautions: timedelta
    snoozes: timedelta
    # Issued cards read back by suppression: kept at least this long, by rule.
    issued_floors: Mapping[str, timedelta] = field(default_factory=dict)
    cautions_floor: timedelta = timedelta(0)  # the repeat window

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(
            issued=settings.retain_issued,
            feedback=settings.retain_feedback,
            cautions=settings.retain_cautions,
            snoozes=settings.retain_snoozes,
            issued_floors={RISK_SCREENING: timedelta(days=settings.risk_screening_interval_days)},
            cautions_floor=timedelta(minutes=settings.repeat_window_minutes),
        )

    def conditions(self, now: datetime) -> dict[str, ColumnElement[bool]]:
        """The rows each table may lose at `now` (a table kept for ever is not named)."""
        now = as_utc(now)
        found: dict[str, ColumnElement[bool]] = {}
        if self.issued:
            old = issued_cards.c.issued_at < now - self.issued
            longer = {r: d for r, d in self.issued_floors.items() if d > self.issued}
            if longer:
                rule = issued_cards.c.rule_id
                old = and_(
                    old,
                    or_(
                        rule.not_in(list(longer)),
                        *(
                            and_(rule == r, issued_cards.c.issued_at < now - d)
                            for r, d in longer.items()
                        ),
                    ),
                )
            found["issued_cards"] = old
        if self.feedback:
            found["feedback"] = feedback.c.received_at < now - self.feedback
        if self.cautions:
            keep = max(self.cautions, self.cautions_floor)
            found["shown_cautions"] = shown_cautions.c.shown_at < now - keep
        if self.snoozes:
            found["snoozes"] = snoozes.c.until < now - self.snoozes
        found["seen_jtis"] = seen_jtis.c.expires_at <= now  # a replay of these is refused anyway
        return found

    def prune(self, store: Deletes, now: datetime, batch: int = BATCH) -> dict[str, int]:
        """Delete what is past retention at `now`; rows deleted, by table (every table named)."""
        deleted = dict.fromkeys(TABLES, 0)
        for table, condition in self.conditions(now).items():
            while True:
                count = store.delete_batch(table, condition, batch)
                deleted[table] += count
                if count < batch:
                    break
        return deleted
