"""The store as a hook call sees it: bounded waits, an outage breaker, a buffer of issued cards.

Clinical answers never wait for the database (issue 15). Every store operation of a call runs
on a small pool of threads and is waited for at most ``deadline`` seconds
(CDS_STORE_DEADLINE_MS). Past it, or on a database error, the store is held *down* for
``retry_after`` seconds (CDS_STORE_RETRY_SECONDS): meanwhile no call waits for it at all, and

- repeat and snooze look-ups fail open (the cards are shown: the engine catches the error);
- issued cards are kept in a bounded buffer and written when the store answers again (a
  background thread retries), so feedback on them is accepted once they are written; feedback
  looks in the buffer first, so the cards the store has not yet seen are not "not issued";
- the JWT replay check falls back to this process's memory (announced in a log line and the
  ``cds_store_fallback_total{kind="jti"}`` metric, never silently);
- feedback and its summary, which are no clinical answer, are tried anyway and waited for up to
  PATIENT_SECONDS; if the store fails them they raise `StoreUnavailable`: 503 with
  ``Retry-After``, nothing stored (all or none, as before).

A worker also boots when the database is down: the schema is checked, and migrated if need be
(cds_service/migrate.py), when the store first answers (`ensure_schema`); `readiness` says what
is missing, or that the schema is newer than this version (then the store is not used). Each
worker also prunes what is past retention (cds_service/retention.py) every so often, batch by
batch through the same bounded calls (`schedule_prune`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cds_service.errors import StoreUnavailable
from cds_service.store import FeedbackEntry, IssuedCard, SchemaVersionError, Store

log = logging.getLogger(__name__)

T = TypeVar("T")
POOL_SIZE = 4  # store operations waiting at once; more fail at once (the store is slow)
BATCH = 500  # issued cards written per statement by the background writer
PATIENT_SECONDS = 5.0  # the longest feedback waits for the store (it is no clinical answer)
# What a store failure can be: the database's errors, and the OS's (a full disk, a socket).
STORE_ERRORS = (SQLAlchemyError, OSError)
PRUNE_JITTER = 0.25  # each wait between prunes is the interval give or take a quarter


class _NoSchema(Exception):
    """The tables an operation needs are not there (and could not be made now)."""


class GuardedStore:
    """A `Store` whose operations never keep a hook call waiting past a deadline."""

    def __init__(
        self,
        store: Store,
        deadline: float = 0.5,
        retry_after: float = 5.0,
        buffer_limit: int = 10_000,
        on_fallback: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        auto_migrate: bool = True,
    ) -> None:
        self.store = store
        self.deadline = deadline
        self.retry_after = retry_after
        self.buffer_limit = buffer_limit
        self.on_fallback = on_fallback  # metrics: called with "jti", "issued", "dropped"...
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._pending: OrderedDict[str, IssuedCard] = OrderedDict()  # not yet in the store
        self._in_flight: set[str] = set()
        self._dropped = 0
        self._jtis: dict[str, float] = {}  # fallback replay memory: key -> expiry (epoch s)
        self._jti_outage = -1.0  # the outage whose replay fallback was last announced
        self._schema_ready = False
        self.auto_migrate = auto_migrate  # migrate a schema found behind (CDS_AUTO_MIGRATE)
        self.schema_revision: str | None = None
        self._schema_problem: str | None = None  # why the schema is not used, when it is not
        self._schema_retry_at = 0.0
        self._prune: Callable[[], Mapping[str, int]] | None = None
        self._prune_every = 0.0
        # metrics: called with the rows deleted by table, or None when a prune did not finish
        self.on_pruned: Callable[[Mapping[str, int] | None], None] | None = None
        self._start_threads()

    def _start_threads(self) -> None:
        self._pid = os.getpid()
        self._pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="cds-store")
        self._slots = threading.BoundedSemaphore(POOL_SIZE)
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._start_pruner()

    def _start_pruner(self) -> None:
        self._stop = threading.Event()
        if self._prune is not None and self._prune_every > 0:
            threading.Thread(target=self._prune_loop, name="cds-prune", daemon=True).start()

    def _forked(self) -> None:
        """Threads do not survive a fork: a forked worker starts its own."""
        if os.getpid() != self._pid:
            self._start_threads()

    # ------------------------------------------------------------------ the breaker

    @property
    def down(self) -> bool:
        return self._clock() < self._down_until

    def _trip(self, reason: str) -> None:
        with self._lock:
            was_up = not self.down
            self._down_until = self._clock() + self.retry_after
        if was_up:
            log.warning(
                "store unavailable (%s): answering without it for %.0f s",
                reason,
                self.retry_after,
            )

    def _fallback(self, kind: str) -> None:
        if self.on_fallback is not None:
            try:
                self.on_fallback(kind)
            except Exception:  # noqa: BLE001 - a metric never breaks a call
                log.debug("fallback metric failed")

    def call(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one store operation, waiting at most `deadline`; raise StoreUnavailable when the
        store is down, busy, slow or failing."""
        return self.call_within(self.deadline, operation, *args, **kwargs)

    def call_patiently(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The same for what is no clinical answer (feedback, its snooze, the summary): tried
        even while the store is held down, and waited for up to PATIENT_SECONDS; a failure
        still raises StoreUnavailable (503, nothing stored)."""
        return self.call_within(
            max(self.deadline, PATIENT_SECONDS), operation, *args, respect_breaker=False, **kwargs
        )

    def call_within(
        self,
        seconds: float,
        operation: Callable[..., T],
        *args: Any,
        respect_breaker: bool = True,
        **kwargs: Any,
    ) -> T:
        self._forked()
        if respect_breaker and self.down:
            raise StoreUnavailable(self.retry_after)
        if not self._slots.acquire(blocking=False):
            raise StoreUnavailable(self.retry_after)  # every thread waits on a slow store

        # Any operation first needs the tables: a call may come while the schema is still being
        # created or migrated (a worker waits for it only briefly at start).
        schema_first = (
            not self._schema_ready
            and getattr(operation, "__func__", None) is not GuardedStore.ensure_schema
        )

        def run() -> T:
            try:
                if schema_first and not self.ensure_schema():
                    raise _NoSchema
                return operation(*args, **kwargs)
            finally:
                self._slots.release()

        future = self._pool.submit(run)
        try:
            return future.result(timeout=seconds)
        except _NoSchema:  # down (ensure_schema tripped the breaker) or a schema not used
            raise StoreUnavailable(self.retry_after) from None
        except FutureTimeout:
            self._trip("no answer within the deadline")
            raise StoreUnavailable(self.retry_after) from None
        except STORE_ERRORS as exc:
            self._trip(type(exc).__name__)
            raise StoreUnavailable(self.retry_after) from exc

    # ------------------------------------------------------------------ schema

    def ensure_schema(self) -> bool:
        """Check the schema, and migrate it if need be, if the store answers; False when it does
        not (logged once: the worker serves anyway, and tries again when the store is back) or
        when the schema cannot be used (newer than this version, or behind with
        CDS_AUTO_MIGRATE off: logged, and checked again after `retry_after`)."""
        if self._schema_ready:
            return True
        if self._schema_problem is not None and self._clock() < self._schema_retry_at:
            return False
        try:
            revision = self.store.create_schema(migrate=self.auto_migrate)
        except SchemaVersionError as exc:
            return self._unusable(str(exc), exc.revision)
        except STORE_ERRORS as exc:
            self._trip(f"schema not checked: {type(exc).__name__}")
            return False
        except Exception as exc:  # noqa: BLE001 - a failed migration never stops a worker
            return self._unusable(f"schema not migrated: {type(exc).__name__}", None)
        self._schema_ready, self._schema_problem, self.schema_revision = True, None, revision
        return True

    def _unusable(self, problem: str, revision: str | None) -> bool:
        """The store answers but its schema is not used: logged once, checked again later."""
        if problem != self._schema_problem:
            log.error("store not used: %s", problem)
        self._schema_problem, self.schema_revision = problem, revision
        self._schema_retry_at = self._clock() + self.retry_after
        return False

    # ------------------------------------------------------------------ pruning

    def schedule_prune(self, prune: Callable[[], Mapping[str, int]], every: float) -> None:
        """Run `prune` in a daemon thread about every `every` seconds (0: never); each run is
        logged and counted (`on_pruned`), a failure by its type only."""
        self._prune, self._prune_every = prune, every
        self._stop.set()  # a thread already running for an earlier schedule ends
        self._start_pruner()

    def _prune_loop(self) -> None:
        stop = self._stop
        while True:
            # Jitter: the workers of a deployment do not all prune at the same moment.
            spread = random.uniform(1 - PRUNE_JITTER, 1 + PRUNE_JITTER)  # noqa: S311 - no secret
            if stop.wait(self._prune_every * spread):
                return
            self.prune_now()

    def prune_now(self) -> Mapping[str, int] | None:
        """One scheduled prune now: rows deleted by table, or None when it did not finish."""
        if self._prune is None:
            return None
        deleted: Mapping[str, int] | None = None
        if self._schema_answers():
            try:
                deleted = self._prune()
            except StoreUnavailable:
                log.warning("prune not finished: the store did not answer")
            except Exception as exc:  # noqa: BLE001 - a prune never takes a worker down
                log.error("prune failed: %s", type(exc).__name__)
        if deleted is not None and any(deleted.values()):
            log.info("pruned rows past retention: %s", dict(deleted))
        if self.on_pruned is not None:
            try:
                self.on_pruned(deleted)
            except Exception:  # noqa: BLE001 - a metric never breaks a prune
                log.debug("prune metric failed")
        return deleted

    def delete_batch(self, table_name: str, condition: Any, limit: int) -> int:
        """One batch of a prune: a bounded call like feedback's (no clinical answer waits)."""
        return self.call_within(
            PATIENT_SECONDS, self.store.delete_batch, table_name, condition, limit
        )

    # ------------------------------------------------------------------ issued cards

    def record_issued(self, cards: Iterable[IssuedCard]) -> None:
        """Keep the issued cards: written now if the store answers within the deadline, else
        buffered (at most `buffer_limit`, the oldest dropped and counted) and written later."""
        self._forked()
        batch = list(cards)
        if not batch:
            return
        with self._lock:
            for card in batch:
                self._pending[card.uuid] = card
            while len(self._pending) > self.buffer_limit:
                self._pending.popitem(last=False)
                self._dropped += 1
                self._fallback("dropped")
            if self._dropped and self._dropped % 1000 == 1:
                log.error("issued-card buffer full: %d card(s) dropped so far", self._dropped)
        # Down, busy, slow, failing or without its schema yet: the cards stay buffered.
        with contextlib.suppress(StoreUnavailable):
            self.call(self._write, batch)  # (the schema first, if need be: `call_within`)
        if self.pending_count:
            self._fallback("issued")
            self._start_writer()

    def _schema_answers(self) -> bool:
        """The store is up and has its schema (created now if need be, within the deadline)."""
        if self.down:
            return False
        if self._schema_ready:
            return True
        try:
            return self.call(self.ensure_schema)
        except StoreUnavailable:
            return False

    def _write(self, batch: list[IssuedCard]) -> None:
        """Write these cards (those still pending and not being written by another thread)."""
        with self._lock:
            todo = [c for c in batch if c.uuid in self._pending and c.uuid not in self._in_flight]
            self._in_flight.update(c.uuid for c in todo)
        if not todo:
            return
        try:
            try:
                self.store.record_issued(todo)
            except IntegrityError:  # some were written by an attempt that seemed to fail
                self.store.record_issued([c for c in todo if self.store.issued(c.uuid) is None])
        except STORE_ERRORS as exc:
            self._trip(type(exc).__name__)
            raise
        else:
            with self._lock:
                for card in todo:
                    self._pending.pop(card.uuid, None)
        finally:
            with self._lock:
                self._in_flight.difference_update(c.uuid for c in todo)

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is not None and self._writer.is_alive():
                self._wake.set()
                return
            self._writer = threading.Thread(
                target=self._drain, name="cds-issued-writer", daemon=True
            )
            self._writer.start()

    def _drain(self) -> None:
        """Write the buffered cards, in batches, until none is left; wait out outages."""
        while True:
            with self._lock:
                batch = [c for u, c in self._pending.items() if u not in self._in_flight][:BATCH]
                pending = len(self._pending)
            if not pending:
                return
            wait = max(self._down_until - self._clock(), 0.0)
            if wait or not batch:
                self._wake.wait(timeout=wait or 0.05)
                self._wake.clear()
                continue
            try:
                if not self.ensure_schema():
                    # Down (the breaker waits) or a schema this version does not use.
                    self._wake.wait(timeout=max(self.retry_after, 0.05))
                    self._wake.clear()
                    continue
                self._write(batch)
                if not self.pending_count:
                    log.info("store back: buffered issued cards written")
            except STORE_ERRORS:
                continue  # tripped: wait for the breaker

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every buffered card is written (tests, shutdown); True when none is left."""
        end = time.monotonic() + timeout
        # Nothing is written to a schema this version does not use: no waiting for it.
        while self.pending_count and self._schema_problem is None and time.monotonic() < end:
            self._start_writer()
            time.sleep(0.01)
        return not self.pending_count

    def issued(self, card_uuid: str, patient: bool = False) -> IssuedCard | None:
        """The issued card, from the buffer if the store has not got it yet (`patient`: for
        feedback, see `call_patiently`)."""
        with self._lock:
            card = self._pending.get(card_uuid)
        if card is not None:
            return card
        call = self.call_patiently if patient else self.call
        return call(self.store.issued, card_uuid)

    # ------------------------------------------------------------------ JWT replay

    def remember_jti(self, iss: str, jti: str, expires_at: datetime, now: datetime) -> bool:
        """The store's replay check; when the store cannot answer, this process's memory (a
        replay across workers is then not caught: announced, and counted)."""
        try:
            return self.call(self.store.remember_jti, iss, jti, expires_at, now)
        except StoreUnavailable:
            pass
        self._fallback("jti")
        with self._lock:  # said once per outage (each renewal of the breaker), not per call
            announce, self._jti_outage = self._jti_outage != self._down_until, self._down_until
        if announce:
            log.warning("JWT replay check in this process's memory: the store did not answer")
        key = f"{iss}\x1f{jti}"
        stamp, until = now.timestamp(), expires_at.timestamp()
        with self._lock:
            for old in [k for k, t in self._jtis.items() if t <= stamp]:
                del self._jtis[old]
            if key in self._jtis:
                return False
            if len(self._jtis) >= self.buffer_limit:
                self._jtis.pop(next(iter(self._jtis)))
            self._jtis[key] = until
        return True

    # ------------------------------------------------------------------ the rest

    def record_feedback(self, entries: Iterable[FeedbackEntry]) -> list[FeedbackEntry]:
        return self.call_patiently(self.store.record_feedback, list(entries))

    def add_snooze(self, *args: Any, **kwargs: Any) -> None:
        self.call_patiently(self.store.add_snooze, *args, **kwargs)

    def feedback_summary(self, service_id: str) -> Any:
        return self.call_patiently(self.store.feedback_summary, service_id)

    def readiness(self) -> dict[str, Any]:
        """What the readiness route reports: whether the store answers and can be written, the
        schema, and the cards waiting to be written."""
        state: dict[str, Any] = {"pendingIssuedCards": self.pending_count}
        if self._dropped:
            state["droppedIssuedCards"] = self._dropped
        try:
            if not self.down and not self._schema_ready:
                self.call(self.ensure_schema)
            if self.down:
                raise StoreUnavailable(self.retry_after)
            # Writable is asked of a schema in use (the probe writes to one of its tables).
            problem = self.call(self.store.write_problem) if self._schema_ready else None
        except StoreUnavailable:
            state["store"] = "unavailable"
            state["ready"] = False
            return state
        state["schema"] = "ok" if self._schema_ready else (self._schema_problem or "missing")
        if self.schema_revision is not None:
            state["schemaRevision"] = self.schema_revision
        state["store"] = problem or "ok"
        state["ready"] = problem is None and self._schema_ready
        return state

    def dispose(self) -> None:
        self._stop.set()
        self.flush(timeout=2.0)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.dispose()

    def __getattr__(self, name: str) -> Any:
        """Every other operation (suppression's look-ups, snoozes, cautions, the feedback
        summary) runs through `call`; plain attributes are the store's."""
        attribute = getattr(self.store, name)
        if not callable(attribute):
            return attribute

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self.call(attribute, *args, **kwargs)

        return guarded
