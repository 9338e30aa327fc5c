"""The store's schema migrations, and retention (issue 15, point 4): versioned migrations that
several workers may run at once, a database made before migrations adopted, one made by a newer
version left alone and reported, and the prune that keeps the tables bounded. On SQLite and
PostgreSQL (`database_url`)."""

from __future__ import annotations

import importlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, insert, select, text

from cds_service import store as store_module
from cds_service.devtools.cli import main
from cds_service.migrate import alembic_config, current_revision, head_revision
from cds_service.retention import Retention
from cds_service.rules.info_card import RISK_SCREENING
from cds_service.settings import Settings, SettingsError
from cds_service.store import FeedbackEntry, IssuedCard, SchemaVersionError, Store
from cds_service.store_guard import GuardedStore
from tests.conftest import NOW, SERVICE_URL, app_with, load_request

HEAD = head_revision()
BASELINE = importlib.import_module("cds_service.migrations.versions.0001_baseline").baseline
FAST = {"store_deadline_ms": 2000, "store_retry_seconds": 1}


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    made = Store.from_url(database_url)
    yield made
    made.dispose()


def counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in store_module.metadata.sorted_tables
        }


def schema_diff(store: Store) -> list[Any]:
    """What the database lacks or has beyond store.py's tables (alembic's autogenerate)."""
    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), store_module.metadata)


def issued(at: datetime, rule: str = "rule-a") -> IssuedCard:
    return IssuedCard(str(uuid.uuid4()), "s", rule, "v", "info", "k", "h", at)


# ----------------------------------------------------------------------------- migrations


def test_a_fresh_store_is_migrated_to_head_and_matches_store_py(store: Store) -> None:
    """The migrations give exactly the tables, columns and indexes store.py defines: a change
    to store.py without a migration fails here."""
    assert current_revision(store.engine) is None
    assert store.create_schema() == HEAD
    assert current_revision(store.engine) == HEAD
    assert schema_diff(store) == []
    assert store.create_schema() == HEAD  # a restart: nothing to do


def test_a_store_made_before_migrations_is_adopted_with_its_rows(store: Store) -> None:
    """Tables as 0.6 created them (create_all, no alembic_version), with rows: the baseline
    adopts them, the later revisions run, nothing stored is lost."""
    BASELINE.create_all(store.engine)
    old = issued(NOW)
    with store.engine.begin() as conn:
        conn.execute(insert(BASELINE.tables["issued_cards"]).values(old.__dict__))
    assert current_revision(store.engine) is None
    assert store.create_schema() == HEAD
    kept = store.issued(old.uuid)
    assert kept is not None
    assert (kept.rule_id, store_module.as_utc(kept.issued_at)) == (old.rule_id, old.issued_at)
    assert schema_diff(store) == []


def test_an_older_revision_is_upgraded(store: Store) -> None:
    with store.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    assert current_revision(store.engine) == "0001"
    assert store.create_schema() == HEAD
    assert schema_diff(store) == []


def test_workers_migrating_at_once_all_succeed(database_url: str) -> None:
    """Four workers find an empty database together: the lock lets one migrate, the others
    find the work done."""
    stores = [Store.from_url(database_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert list(pool.map(lambda s: s.create_schema(), stores)) == [HEAD] * 4
        with stores[0].engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
        assert schema_diff(stores[0]) == []
    finally:
        for s in stores:
            s.dispose()


def test_one_process_migrating_several_databases_at_once(tmp_path: Path) -> None:
    """Alembic keeps a migration's state in its module: two threads migrating two databases at
    once (a worker's start-up and its store guard's threads, a test with several stores) must
    not trample each other's."""
    stores = [Store.from_url(f"sqlite:///{tmp_path / f'db{i}.sqlite3'}") for i in range(4)]
    start = threading.Barrier(4)

    def migrate(store: Store) -> str:
        start.wait(timeout=30)
        return store.create_schema()

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert list(pool.map(migrate, stores)) == [HEAD] * 4
        assert all(schema_diff(s) == [] for s in stores)
    finally:
        for s in stores:
            s.dispose()


def test_an_operation_before_the_schema_waits_for_it(tmp_path: Path) -> None:
    """A call that comes while the schema is not made yet (the worker stopped waiting for it at
    start) gets its answer once it is made, not "no such table"."""
    guard = GuardedStore(Store.from_url(f"sqlite:///{tmp_path / 'new.sqlite3'}"), deadline=30)
    try:
        assert guard.caution("no-such-key") is None
        assert guard.issued("no-such-card") is None
        assert guard.readiness()["schema"] == "ok"
    finally:
        guard.dispose()


def _stamp(store: Store, revision: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_a_store_migrated_by_a_newer_version_is_left_alone(store: Store) -> None:
    store.create_schema()
    _stamp(store, "9999")
    with pytest.raises(
        SchemaVersionError, match=rf"schema 9999 is newer than this version \({HEAD}\)"
    ):
        store.create_schema()
    assert current_revision(store.engine) == "9999"


def test_a_newer_schema_is_reported_not_ready_and_not_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    ahead = Store.from_url(url)
    ahead.create_schema()
    _stamp(ahead, "9999")
    with app_with(tmp_path, database_url=url, **FAST) as application:
        client = application.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json["checks"]["schema"] == f"schema 9999 is newer than this version ({HEAD})"
        assert ready.json["checks"]["schemaRevision"] == "9999"
        # Cards are still answered; nothing is written to a schema this version does not know.
        assert (
            client.post(SERVICE_URL, json=load_request("02-aluminium-egfr-22")).status_code == 200
        )
        assert application.extensions["cds_engine"].store.pending_count > 0
    assert counts(ahead)["issued_cards"] == 0
    assert current_revision(ahead.engine) == "9999"
    ahead.dispose()


def test_a_migration_that_fails_does_not_stop_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> str:
        raise RuntimeError("a bug in a migration")

    monkeypatch.setattr(store_module, "ensure_current", broken)
    with app_with(tmp_path, **FAST) as application:
        client = application.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json["checks"]["schema"] == "schema not migrated: RuntimeError"
        answer = client.post(SERVICE_URL, json=load_request("02-aluminium-egfr-22"))
        assert answer.status_code == 200


def test_with_auto_migrate_off_a_store_behind_waits_for_the_migrate_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    behind = Store.from_url(url)
    with behind.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    with app_with(tmp_path, database_url=url, auto_migrate=False, **FAST) as application:
        client = application.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json["checks"]["schema"].startswith("schema 0001 is behind this version")
        assert current_revision(behind.engine) == "0001"

        assert main(["migrate", "--database-url", url]) == 0
        assert capsys.readouterr().out == f"schema: 0001 -> {HEAD}\n"
        application.extensions["cds_engine"].store._schema_retry_at = 0.0  # retry delay passed
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json
        assert ready.json["checks"]["schemaRevision"] == HEAD
    behind.dispose()


# ----------------------------------------------------------------------------- command line


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def test_the_migrate_command_prints_the_revisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'cds.sqlite3'}"
    assert run(capsys, "migrate", "--database-url", url) == (0, f"schema: none -> {HEAD}\n", "")
    status, out, _ = run(capsys, "migrate", "--database-url", url)
    assert (status, out) == (0, f"schema: {HEAD} -> {HEAD} (already there: nothing to do)\n")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}",  # a directory: no database file can be opened there
        "postgresql+psycopg://postgres@127.0.0.1:1/test",  # nothing listens on port 1
    ],
)
@pytest.mark.parametrize("command_name", ["migrate", "prune"])
def test_a_database_that_does_not_answer_is_one_line_and_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, command_name: str
) -> None:
    status, out, err = run(capsys, command_name, "--database-url", url.format(tmp=tmp_path))
    assert status == 1
    assert out == ""
    assert err.startswith("calcinosis-cds: the database did not answer: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_the_migrate_command_leaves_a_newer_schema_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    ahead = Store.from_url(url)
    ahead.create_schema()
    _stamp(ahead, "9999")
    status, _, err = run(capsys, "migrate", "--database-url", url)
    assert (status, err) == (
        1,
        f"calcinosis-cds: schema 9999 is newer than this version ({HEAD})\n",
    )
    ahead.dispose()


def test_serve_migrates_before_the_workers_and_serves_anyway_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []

    def execve(_path: str, command: list[str], _env: dict[str, str]) -> None:
        started.append(command)

    monkeypatch.setattr("os.execve", execve)
    url = f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    status, _, err = run(capsys, "serve", "--database-url", url)
    assert status == 0
    assert f"calcinosis-cds: schema at {HEAD} (migrated from none)\n" in err
    served = Store.from_url(url)
    assert current_revision(served.engine) == HEAD
    served.dispose()
    status, _, err = run(capsys, "serve", "--database-url", f"sqlite:///{tmp_path}")
    assert status == 0
    assert "the database did not answer (OperationalError): serving anyway" in err
    assert len(started) == 2  # gunicorn started both times


# ----------------------------------------------------------------------------- retention

RETAIN_A_DAY = Retention(
    issued=timedelta(days=1),
    feedback=timedelta(days=1),
    cautions=timedelta(days=1),
    snoozes=timedelta(days=1),
    issued_floors={RISK_SCREENING: timedelta(days=365)},
    cautions_floor=timedelta(days=2),  # a repeat window longer than the retention
)


def _fill(store: Store) -> None:
    """Rows on either side of a day's retention, in every table."""
    old, recent = NOW - timedelta(days=1, minutes=1), NOW - timedelta(hours=23)
    store.record_issued([issued(old) for _ in range(5)] + [issued(recent)])
    store.record_issued([issued(NOW - timedelta(days=200), RISK_SCREENING)])  # in its interval
    store.record_issued([issued(NOW - timedelta(days=366), RISK_SCREENING)])  # past it
    for received in (old, recent):
        entry = FeedbackEntry(
            str(uuid.uuid4()), "s", "r", "k", "accepted", None, None, None, None, NOW, received
        )
        store.record_feedback([entry])
    store.remember_caution("c-old", "f", NOW - timedelta(days=3))
    store.remember_caution("c-in-window", "f", NOW - timedelta(days=1, hours=12))
    store.add_snooze("k1", "e", NOW - timedelta(days=1, minutes=1), "card")  # ended > 1 day ago
    store.add_snooze("k2", "e", NOW - timedelta(hours=1), "card")  # ended an hour ago
    store.add_snooze("k3", "e", NOW + timedelta(days=7), "card")  # running
    store.remember_jti("iss", "expired", NOW - timedelta(seconds=1), NOW - timedelta(minutes=5))
    store.remember_jti("iss", "valid", NOW + timedelta(minutes=5), NOW - timedelta(minutes=5))


def test_prune_deletes_what_is_past_retention_and_keeps_the_rest(store: Store) -> None:
    store.create_schema()
    _fill(store)
    assert RETAIN_A_DAY.prune(store, NOW, batch=2) == {
        "issued_cards": 6,  # five old ones in three batches, and the screening card past 365 d
        "feedback": 1,
        "shown_cautions": 1,  # the one within the repeat window is kept
        "snoozes": 1,
        "seen_jtis": 1,
    }
    assert counts(store) == {
        "issued_cards": 2,
        "shown_cautions": 1,
        "snoozes": 2,
        "feedback": 1,
        "seen_jtis": 1,
    }
    assert store.caution("c-in-window") is not None
    assert store.snoozed([("k3", "e")], NOW) == {("k3", "e")}
    assert set(RETAIN_A_DAY.prune(store, NOW).values()) == {0}  # nothing more to do


def test_zero_keeps_a_table_for_ever(store: Store) -> None:
    store.create_schema()
    _fill(store)
    forever = Retention(timedelta(0), timedelta(0), timedelta(0), timedelta(0))
    deleted = forever.prune(store, NOW + timedelta(days=10_000))
    assert deleted == {
        "issued_cards": 0,
        "feedback": 0,
        "shown_cautions": 0,
        "snoozes": 0,
        "seen_jtis": 2,  # expired JWT ids always go
    }


def test_ten_thousand_cards_stay_bounded_after_prune(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'cds.sqlite3'}")
    store.create_schema()
    store.record_issued([issued(NOW - timedelta(days=2)) for _ in range(10_000)])
    store.record_issued([issued(NOW)])
    assert RETAIN_A_DAY.prune(store, NOW)["issued_cards"] == 10_000
    assert counts(store)["issued_cards"] == 1
    store.dispose()


def test_the_prune_command_applies_the_retention_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    store = Store.from_url(url)
    store.create_schema()
    now = datetime.now(UTC)
    store.record_issued([issued(now - timedelta(days=3)), issued(now)])
    monkeypatch.setenv("CDS_RETAIN_ISSUED", "2d")
    status, out, _ = run(capsys, "prune", "--database-url", url)
    assert status == 0
    assert json.loads(out) == {
        "issued_cards": 1,
        "feedback": 0,
        "shown_cautions": 0,
        "snoozes": 0,
        "seen_jtis": 0,
    }
    assert counts(store)["issued_cards"] == 1
    # --as-of rehearses the retention: three days on, the other card is past it too.
    later = (now + timedelta(days=3)).date().isoformat()
    status, out, _ = run(capsys, "prune", "--database-url", url, "--as-of", later)
    assert (status, json.loads(out)["issued_cards"]) == (0, 1)
    assert counts(store)["issued_cards"] == 0
    store.dispose()


def test_each_worker_prunes_through_its_guard_and_counts_it(tmp_path: Path) -> None:
    settings = {"retain_issued": timedelta(days=1), "prune_interval": timedelta(0), **FAST}
    with app_with(tmp_path, **settings) as application:
        guarded: GuardedStore = application.extensions["cds_engine"].store
        guarded.store.record_issued([issued(NOW - timedelta(days=2)) for _ in range(3)])
        assert guarded.prune_now()["issued_cards"] == 3  # type: ignore[index]
        metrics = application.test_client().get("/metrics").text
        assert 'cds_store_pruned_total{table="issued_cards"} 3.0' in metrics

        real = guarded.store
        guarded.store = Broken()  # type: ignore[assignment]
        assert guarded.prune_now() is None  # logged and counted, never raised
        guarded.store = real
        metrics = application.test_client().get("/metrics").text
        assert "cds_store_prune_failures_total 1.0" in metrics


class Broken:
    """A store whose deletes fail (a database that stopped)."""

    def delete_batch(self, *_args: Any) -> int:
        from sqlalchemy.exc import OperationalError

        raise OperationalError("stopped", {}, ConnectionRefusedError())

    def dispose(self) -> None:
        pass


def test_the_periodic_prune_runs_in_its_own_thread_until_disposed(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'cds.sqlite3'}")
    store.create_schema()
    guarded = GuardedStore(store)
    ran = threading.Event()

    def prune() -> dict[str, int]:
        ran.set()
        return {}

    before = set(threading.enumerate())
    guarded.schedule_prune(prune, every=0.01)
    (thread,) = [t for t in threading.enumerate() if t.name == "cds-prune" and t not in before]
    assert ran.wait(timeout=30)
    guarded.dispose()
    thread.join(timeout=30)
    assert not thread.is_alive()


# ----------------------------------------------------------------------------- settings


def test_retention_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CDS_RETAIN_ISSUED": "30d",
            "CDS_RETAIN_FEEDBACK": "0",
            "CDS_RETAIN_CAUTIONS": "24h",
            "CDS_RETAIN_SNOOZES": "7d",
            "CDS_PRUNE_INTERVAL": "0",
            "CDS_AUTO_MIGRATE": "off",
        }
    )
    assert (settings.retain_issued, settings.retain_feedback) == (timedelta(days=30), timedelta(0))
    assert (settings.retain_cautions, settings.retain_snoozes) == (
        timedelta(hours=24),
        timedelta(days=7),
    )
    assert settings.prune_interval == timedelta(0)
    assert settings.auto_migrate is False
    defaults = Settings()
    assert defaults.auto_migrate is True
    assert defaults.retain_issued >= timedelta(days=defaults.risk_screening_interval_days)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("CDS_RETAIN_ISSUED", "30m", "CDS_RETAIN_ISSUED must be 0 (keep for ever) or at least 1h"),
        ("CDS_RETAIN_SNOOZES", "a week", "CDS_RETAIN_SNOOZES must be a duration"),
        ("CDS_PRUNE_INTERVAL", "1y", "CDS_PRUNE_INTERVAL must be a duration"),
        ("CDS_AUTO_MIGRATE", "maybe", "CDS_AUTO_MIGRATE must be on or off"),
    ],
)
def test_bad_retention_settings_are_refused(var: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({var: value})


def test_the_postgres_migration_lives_in_the_private_schema(postgres_url: str) -> None:
    """alembic_version is created in the schema the URL's search_path names, beside the
    tables (tests and installations sharing a database do not see each other's)."""
    store = Store.from_url(postgres_url)
    store.create_schema()
    schema = postgres_url.rsplit("%3D", 1)[1]
    admin = create_engine(postgres_url.split("?")[0])
    with admin.connect() as conn:
        where = conn.execute(
            text("SELECT table_schema FROM information_schema.tables WHERE table_name = :t"),
            {"t": "alembic_version"},
        ).scalars()
        assert schema in list(where)
    admin.dispose()
    store.dispose()
