"""Shared test fixtures: app factory with pinned clock, fixture files, database URLs."""

from __future__ import annotations

import json
import os
import subprocess
import time as clock
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, func, select, text

from cds_service.app import create_app
from cds_service.devtools.fixture_set import transaction_bundle
from cds_service.devtools.hookrequest import resources_of
from cds_service.hooks.validation import violations
from cds_service.settings import Settings
from cds_service.store import metadata as store_metadata

# Hypothesis profiles. `ci` (what `make test` runs): a quarter of Hypothesis' 100 examples per
# property, derandomised so every run tries the same inputs, no deadline (a 2-core machine is
# slow). `fuzz` (`make fuzz`): ten times as many, from a new random seed each run; a failure
# prints the `@reproduce_failure` blob that replays it. HYPOTHESIS_PROFILE picks one (default
# `ci`); `pytest --hypothesis-profile=NAME` overrides it.
hypothesis_settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, database=None
)
hypothesis_settings.register_profile(
    "fuzz", max_examples=250, deadline=None, derandomize=False, database=None, print_blob=True
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_ROOT = ROOT / "fixtures"
FIXTURES = FIXTURE_ROOT / "patient-view"
# Fixture folder -> the service its requests are for.
SERVICES = {
    "patient-view": "calcinosis-patient-view",
    "order-select": "calcinosis-order-select",
    "order-sign": "calcinosis-order-sign",
}
SERVICE_URL = "/cds-services/calcinosis-patient-view"


def _fixtures_anchor() -> datetime:
    """Noon UTC on the date the committed fixtures are anchored at (their `asOf`)."""
    first = next(iter(sorted(FIXTURES.glob("*.expected.json"))))
    as_of = date.fromisoformat(json.loads(first.read_text(encoding="utf-8"))["asOf"])
    return datetime.combine(as_of, time(12, 0), tzinfo=UTC)


# "Now" for every test: the fixtures' dates are relative to it.
NOW = _fixtures_anchor()
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def fixture_names(hook: str = "patient-view") -> list[str]:
    folder = FIXTURE_ROOT / hook
    return sorted(p.name.removesuffix(".request.json") for p in folder.glob("*.request.json"))


def load_request(name: str, hook: str = "patient-view") -> dict[str, Any]:
    path = FIXTURE_ROOT / hook / f"{name}.request.json"
    return json.loads(path.read_text(encoding="utf-8"))


def load_expected(name: str, hook: str = "patient-view") -> dict[str, Any]:
    path = FIXTURE_ROOT / hook / f"{name}.expected.json"
    return json.loads(path.read_text(encoding="utf-8"))


def card_kinds(name: str, hook: str = "patient-view") -> set[tuple[str, str | None]]:
    """The (rule, variant) of each card a fixture expects; ("silent", None) for no card."""
    cards = load_expected(name, hook)["cards"]
    return {(c["rule"], c.get("variant")) for c in cards} or {("silent", None)}


def representatives(hook: str = "patient-view") -> list[str]:
    """Fixtures of `hook` that between them give every card kind its fixtures give: each
    fixture, in name order, that gives a kind none before it gave. The suites that run a
    fixture through a costly path (a FHIR server, the command line, DEBUG logs, French) run
    these; the cheap ones and the golden cards run every fixture."""
    chosen: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    for name in fixture_names(hook):
        if not card_kinds(name, hook) <= seen:
            chosen.append(name)
            seen |= card_kinds(name, hook)
    return chosen


def assert_valid_response(body: Any) -> None:
    """Every response the service produces must pass the CDS Hooks response schema."""
    problems = violations("response", body)
    assert not problems, problems


TEST_STORE_DEADLINE_MS = 5000


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'cds.sqlite3'}",
        "clock": lambda: NOW,
        "log_level": "WARNING",
        # A loaded test machine can take more than the production 500 ms to open a database
        # connection: the tests of the outage behaviour set their own deadline.
        "store_deadline_ms": TEST_STORE_DEADLINE_MS,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def app_with(tmp_path: Path, **overrides: Any) -> Iterator[Flask]:
    """An app with settings overrides, closed (connections released) afterwards."""
    application = create_app(make_settings(tmp_path, **overrides))
    try:
        yield application
    finally:
        application.extensions["cds_engine"].close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    yield application
    application.extensions["cds_engine"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """One app, default settings, for the tests of a module that leave its store empty: calls
    answered with an error, discovery, health, preflights (a call that issues cards or takes
    feedback writes to the store, and needs `client`). It fails the module if a row was
    stored."""
    application = create_app(make_settings(tmp_path_factory.mktemp("shared")))
    yield application.test_client()
    engine = application.extensions["cds_engine"]
    with engine.store.engine.connect() as conn:
        stored = {
            table.name: count
            for table in store_metadata.sorted_tables
            if (count := conn.execute(select(func.count()).select_from(table)).scalar_one())
        }
    engine.close()
    assert not stored, f"a test on shared_client wrote to its store: {stored}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL with a private schema for this test; skips when unreachable."""
    base = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    if not base:  # `make test` found no PostgreSQL (scripts/ensure-postgres said why)
        pytest.skip("PostgreSQL not available on this machine (see scripts/ensure-postgres)")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(base, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        pytest.skip(
            f"PostgreSQL not reachable at {base} ({type(exc).__name__}); set TEST_POSTGRES_URL"
        )
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each persistence test runs against the embedded SQLite default and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")


SEKMET_TOKEN = "sekmet-test-token-7f3a"  # the only bearer token the test FHIR server accepts


def free_port() -> int:
    """A TCP port free on loopback now, for a server a test starts."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server process, its output (both streams) in `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(  # noqa: S603 - the tests' own commands, fixed arguments
            command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def wait_until_up(
    url: str, process: subprocess.Popen[Any], log: Path | None = None, within_s: float = 60
) -> None:
    """Wait until `url` answers 200, or fail with how the server ended and its log's tail."""
    deadline = clock.monotonic() + within_s
    while clock.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        clock.sleep(0.05)
    status = process.poll()
    state = f"exited with {status}" if status is not None else f"did not answer in {within_s} s"
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    pytest.fail(f"the server of {url} {state}\n{tail}")


def fixture_resources(
    name: str, hook: str = "patient-view", drafts: bool = True
) -> list[dict[str, Any]]:
    """The FHIR resources of a fixture patient: what its prefetch carries, and (unless
    `drafts` is false) its draft orders."""
    request = load_request(name, hook)
    found = [r for value in request["prefetch"].values() if value for r in resources_of(value)]
    if drafts and "draftOrders" in request["context"]:
        found += resources_of(request["context"]["draftOrders"])
    return found


def collection(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A FHIR Bundle of type collection holding `resources`."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def fixture_transaction(names: list[str]) -> dict[str, Any]:
    """A FHIR transaction Bundle that PUTs every resource of the named fixture patients: what
    `calcinosis-cds export-fixtures` writes."""
    return transaction_bundle(load_request(name) for name in names)


@contextmanager
def running_sekmet(work: Path, token: str | None = SEKMET_TOKEN) -> Iterator[str]:
    """A real FHIR R4 server (sekmet-fhir) on a free loopback port, its data in `work`, loaded
    with every fixture patient; yields its base URL.

    With `token` it accepts only `Authorization: Bearer <token>`; with None it is open, as the
    CDS Hooks Sandbox needs (it sends the FHIR server no token). It answers CORS for any origin.
    """
    import sys

    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    server_auth = "{types: [bearer], tokens: [" + token + "]}" if token else "{types: [none]}"
    (work / "settings.yaml").write_text(
        "\n".join(
            [
                f"base_url: {base}",
                "host: 127.0.0.1",
                f"port: {port}",
                f"data_dir: {work / 'data'}",
                f"server_auth: {server_auth}",
                "validation: {inbound: warn}",
                "simulator: {enabled: false}",
            ]
        )
    )
    sekmet_cli = Path(sys.executable).parent / "sekmet"
    process = subprocess.Popen(  # noqa: S603 - our own test server, fixed arguments
        [str(sekmet_cli), "serve", "--config", str(work / "settings.yaml")],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        wait_until_up(f"{base}/metadata", process)
        loaded = httpx.post(
            base,
            json=fixture_transaction(fixture_names()),
            headers={**auth, "Content-Type": "application/fhir+json"},
            timeout=30,
        )
        assert loaded.status_code == 200, loaded.text[:500]
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real FHIR R4 server (sekmet-fhir) on loopback, loaded with every fixture patient.

    Yields its base URL. It accepts only `Authorization: Bearer SEKMET_TOKEN`.
    """
    with running_sekmet(tmp_path_factory.mktemp("sekmet")) as base:
        yield base


def by_rule(cards: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """The one card of `rule` in a response."""
    found = [c for c in cards if c["source"]["topic"]["code"] == rule]
    assert len(found) == 1, (rule, [c["source"]["topic"]["code"] for c in cards])
    return found[0]


def expected_indicators(name: str, hook: str = "patient-view") -> list[str]:
    return [c["indicator"] for c in load_expected(name, hook)["cards"]]


def fhir_authorization(token: str, **extra: str) -> dict[str, Any]:
    """A CDS Hooks `fhirAuthorization` object carrying `token`."""
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "calcinosis-cds",
        **extra,
    }


# Chromium for the browser tests: run as root in a container, talking only to loopback. Each
# launch gets a fresh, empty profile (Playwright creates a temporary user-data-dir).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """The system Chromium (`CDS_TEST_CHROMIUM`, else /usr/bin/chromium) driven by Playwright;
    skips the calling test, saying why, when there is none or it cannot start."""
    from playwright.sync_api import sync_playwright

    path = os.environ.get("CDS_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip(
            f"no Chromium at {path}: set CDS_TEST_CHROMIUM, or run scripts/ensure-browser "
            "(as root on Debian it installs one)"
        )
    manager = sync_playwright().start()
    try:
        browser = manager.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
    except Exception as exc:  # noqa: BLE001 - any launch failure means "no usable browser"
        manager.stop()
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        pytest.skip(f"Chromium at {path} cannot start: {type(exc).__name__}: {reason}")
    try:
        yield browser
    finally:
        browser.close()
        manager.stop()
