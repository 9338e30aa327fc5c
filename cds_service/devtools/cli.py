"""The `calcinosis-cds` command (also `python -m cds_service`).

    serve            serve the CDS service with gunicorn (what `make run` does)
    migrate          bring the store's schema to this version (before the workers start)
    prune            delete what is past retention in the store now (CDS_RETAIN_*)
    invoke           run a hook on a fixture, FHIR files or a live FHIR server; print the cards
    check-knowledge  check the clinical knowledge files, in plain words
    fixtures         list the synthetic fixture patients
    export-fixtures  write the fixture patients as a FHIR transaction Bundle

Exit status: 0 success; 1 the service answered an error, a check failed, or the database did
not answer; 2 the command was used wrongly (a message says what to do).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from cds_service.devtools.fixture_set import (
    REQUEST_SUFFIX,
    Fixture,
    find_fixture,
    list_fixtures,
    transaction_bundle,
)
from cds_service.devtools.hookrequest import RequestBuildError, build_request, resources_of
from cds_service.errors import outcome_body
from cds_service.observability import MULTIPROC_ENV, SERVE_BANNER_ENV
from cds_service.settings import (
    DEFAULT_THREADS,
    LOG_LEVELS,
    SUPPORTED_LANGUAGES,
    Settings,
    SettingsError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

PROG = "calcinosis-cds"
T = TypeVar("T")


def _version() -> str:
    try:
        return version("calcinosis-cds")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


EPILOG = "Settings not given as flags come from the environment (see the README, Settings)."


class UsageError(Exception):
    """The command cannot run as asked; the message says what to do instead."""


class StoreFailure(Exception):
    """The database did not answer, or its schema cannot be used (exit status 1)."""


# ----------------------------------------------------------------------------- serve


# The options of `serve` that gunicorn takes, not Settings: option -> (variable, default).
SERVE_ENVIRONMENT = {
    "host": ("HOST", "127.0.0.1"),
    "port": ("PORT", "8080"),
    "workers": ("WEB_CONCURRENCY", "2"),
    "threads": ("CDS_THREADS", str(DEFAULT_THREADS)),
}


def _serve_option(args: argparse.Namespace, option: str) -> Any:
    """The flag's value, else its environment variable's (a bad one is a setting error naming
    the variable, in one line, rather than argparse's usage text about a flag not given)."""
    if (given := getattr(args, option)) is not None:
        return given
    var, default = SERVE_ENVIRONMENT[option]
    raw = os.environ.get(var, "").strip() or default
    convert = {"host": str, "port": _port, "workers": _positive, "threads": _positive}[option]
    try:
        return convert(raw)
    except argparse.ArgumentTypeError as exc:
        raise SettingsError(f"{var}: {exc}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Check everything that would otherwise fail in every worker (or in gunicorn, after five
    seconds of retries) and say it in one line; then exec gunicorn. gunicorn_conf.when_ready
    prints "serving on" once the port is bound."""
    host, port, workers, threads = (_serve_option(args, o) for o in SERVE_ENVIRONMENT)
    env = dict(os.environ)
    for flag, var in (
        ("database_url", "DATABASE_URL"),
        ("auth", "CDS_AUTH"),
        ("trusted_issuers", "CDS_TRUSTED_ISSUERS"),
        ("public_base_url", "CDS_PUBLIC_BASE_URL"),
        ("lang", "CDS_DEFAULT_LANGUAGE"),
        ("log_level", "LOG_LEVEL"),
        ("cards_dir", "CDS_CARDS_DIR"),
    ):
        if (value := getattr(args, flag)) is not None:
            env[var] = str(value)
    if args.fhir_server:
        env["CDS_FHIR_SERVERS"] = ",".join(args.fhir_server)
    settings = Settings.from_env(env)
    _check_issuers(settings)
    engine = _engine(settings.database_url)  # (makes an SQLite file's folder)
    _check_metrics_dir(env.get(MULTIPROC_ENV))
    address = f"[{host}]" if ":" in host and not host.startswith("[") else host
    _check_port(address, port)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:cds_service.gunicorn_conf",
        "--bind",
        f"{address}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--access-logfile",
        "-",
        "cds_service.app:create_app()",
    ]
    # "serving on ..." from gunicorn_conf.when_ready, once the port is bound.
    env[SERVE_BANNER_ENV] = "preview" if settings.preview else "no-preview"
    print(f"{PROG}: {_schema_before_workers(engine, settings)}", file=sys.stderr)
    sys.stderr.flush()
    os.execve(sys.executable, command, env)  # noqa: S606 - our own interpreter, fixed arguments
    return 0  # not reached


def _engine(url: str) -> Engine:
    """An engine for DATABASE_URL, connected to nothing yet. A URL that cannot give one (not a
    URL, postgres://, an unknown database, a driver not installed, an SQLite folder that cannot
    be made) is a bad setting: one line. The URL itself is never printed (it may hold a
    password)."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from cds_service.settings import database_url_problem
    from cds_service.store import make_engine

    if problem := database_url_problem(url):
        raise SettingsError(problem)
    scheme = url.partition("://")[0]
    try:
        return make_engine(url)
    except NoSuchModuleError:
        raise SettingsError(
            f"DATABASE_URL names {scheme}://, a database SQLAlchemy does not know: this service "
            "stores in sqlite:///FILE or postgresql+psycopg://USER@HOST:5432/DB"
        ) from None
    except ArgumentError:
        raise SettingsError(
            "DATABASE_URL is not a database URL: sqlite:///FILE or "
            "postgresql+psycopg://USER@HOST:5432/DB"
        ) from None
    except ImportError as exc:
        raise SettingsError(
            f"DATABASE_URL {scheme}://... needs the module {exc.name}, which is not installed"
        ) from None
    except OSError as exc:  # the folder of an SQLite file
        where = f" {exc.filename}" if exc.filename else ""
        raise SettingsError(
            f"DATABASE_URL: the SQLite file's folder{where} cannot be made ({exc.strerror})"
        ) from None


def _check_issuers(settings: Settings) -> None:
    """With CDS_AUTH=jwt every worker loads the trusted issuers: load them once here (the same
    loader, cds_service.trust.load_issuers) so a missing or malformed file is one line."""
    if settings.auth != "jwt" or settings.trusted_issuers_file is None:
        return
    from cds_service.trust import load_issuers

    try:
        load_issuers(settings.trusted_issuers_file)
    except ValueError as exc:
        raise SettingsError(f"CDS_TRUSTED_ISSUERS: {exc}") from None


def _check_metrics_dir(named: str | None) -> None:
    """gunicorn_conf.on_starting makes and empties PROMETHEUS_MULTIPROC_DIR in the master:
    one that cannot be written would be a traceback there."""
    if not named:
        return
    folder = Path(named)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"PROMETHEUS_MULTIPROC_DIR {named!r} cannot be made ({exc.strerror})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SettingsError(f"PROMETHEUS_MULTIPROC_DIR {named!r} cannot be written")


def _check_port(host: str, port: int) -> None:
    """Bind host:port once, with gunicorn's socket options, and let it go: a port in use is
    one line and exit status 2 here, rather than five seconds of gunicorn's retries."""
    import errno
    import socket

    where = f"{host}:{port}"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UsageError(f"cannot listen on {where}: the host is not known ({reason})") from None
    hints = {
        errno.EADDRINUSE: "the port is in use (another server? --port or PORT to choose another)",
        errno.EACCES: "permission denied (a port below 1024 needs privileges)",
        errno.EADDRNOTAVAIL: "not an address of this machine (--host or HOST)",
    }
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            reason = hints.get(exc.errno or 0, exc.strerror or type(exc).__name__)
            raise UsageError(f"cannot listen on {where}: {reason}") from None


def _schema_before_workers(engine: Engine, settings: Settings) -> str:
    """Migrate once here, before the workers (best effort: they migrate if this cannot; a
    database that does not answer is not an error, the service serves without it)."""
    from cds_service.migrate import before_workers

    return before_workers(engine, settings.auto_migrate)


# ----------------------------------------------------------------------------- the store


def _on_store(args: argparse.Namespace, work: Callable[[Engine, Settings], T]) -> T:
    """Run `work` on the store (--database-url, else DATABASE_URL); a database that does not
    answer, or a schema this version cannot use, is one line and exit status 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.store import SchemaVersionError

    settings = Settings.from_env()
    engine = _engine(args.database_url or settings.database_url)  # a bad URL: exit status 2
    try:
        return work(engine, settings)
    except SchemaVersionError as exc:
        raise StoreFailure(str(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        detail = (str(cause).strip().splitlines() or [""])[0][:200]
        reason = f"{type(cause).__name__} ({detail})" if detail else type(cause).__name__
        raise StoreFailure(f"the database did not answer: {reason}") from None
    finally:
        engine.dispose()


def cmd_migrate(args: argparse.Namespace) -> int:
    from cds_service.migrate import upgrade

    before, after = _on_store(args, lambda engine, _settings: upgrade(engine))
    note = " (already there: nothing to do)" if before == after else ""
    print(f"schema: {before or 'none'} -> {after}{note}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from cds_service.retention import Retention
    from cds_service.store import Store

    def prune(engine: Engine, settings: Settings) -> dict[str, int]:
        store = Store(engine)
        store.create_schema(migrate=settings.auto_migrate)
        now = datetime.combine(args.as_of, time(12, 0), tzinfo=UTC) if args.as_of else None
        return Retention.from_settings(settings).prune(store, now or settings.now())

    print(json.dumps(_on_store(args, prune)))
    return 0


# ----------------------------------------------------------------------------- invoke


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None


def _resources_in(path: Path) -> list[dict[str, Any]]:
    """The FHIR resources of a file (a resource or a Bundle) or of every *.json in a folder."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"{path}: no *.json file in this folder")
    found = []
    for file in files:
        try:
            found += resources_of(_read_json(file))
        except RequestBuildError as exc:
            raise UsageError(f"{file}: {exc}") from None
    return found


def _source(args: argparse.Namespace, settings: Settings) -> tuple[Any, Fixture | None]:
    """What to invoke: a request, a list of resources, or None (live FHIR server only)."""
    if args.source is None:
        if not args.fhir_server:
            raise UsageError(
                "say what to invoke: a fixture name, a request or FHIR file, a folder of FHIR "
                "files, or --fhir-server URL --patient ID (see --help)"
            )
        return None, None
    path = Path(args.source)
    if not path.exists():
        fixture = find_fixture(settings.fixtures_dir, args.source)
        if fixture is None:
            raise UsageError(
                f"{args.source}: no such file, folder or fixture; "
                f"`{PROG} fixtures` lists the fixture names"
            )
        return fixture.request(), fixture
    if path.is_file() and path.name.endswith(REQUEST_SUFFIX):
        name = path.name.removesuffix(REQUEST_SUFFIX)
        fixture = find_fixture(path.parent.parent, f"{path.parent.name}/{name}")
        return _read_json(path), fixture
    if path.is_file():
        document = _read_json(path)
        if isinstance(document, Mapping) and "hook" in document:
            return document, None  # a CDS Hooks request
    return _resources_in(path), None


def _service_id(args: argparse.Namespace, services: Mapping[str, Any], hook: str | None) -> str:
    wanted = args.service or hook or "patient-view"
    if wanted in services:
        return wanted
    matches = [s.id for s in services.values() if s.hook == wanted]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{s.id} ({s.hook})" for s in services.values())
    raise UsageError(f"no service or hook called {wanted!r}; known: {known}")


def _clock(args: argparse.Namespace, fixture: Fixture | None) -> tuple[datetime | None, str]:
    if args.as_of:
        day = args.as_of
    elif fixture is not None and fixture.as_of is not None:
        day = fixture.as_of
    else:
        return None, ""
    note = f"clock at {day.isoformat()} 12:00 UTC" + (
        " (the fixture's anchor date; --as-of to change)" if not args.as_of else ""
    )
    return datetime.combine(day, time(12, 0), tzinfo=UTC), note


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the folders given as flags."""
    settings = Settings.from_env()
    if args.cards_dir:
        settings = replace(settings, cards_dir=args.cards_dir)
    if args.fixtures_dir:
        settings = replace(settings, fixtures_dir=args.fixtures_dir)
    return settings


def cmd_invoke(args: argparse.Namespace) -> int:
    from cds_service.engine import CdsEngine
    from cds_service.errors import InputError
    from cds_service.store import Store

    settings = _settings(args)
    if args.fhir_server and args.source is None and not args.patient:
        raise UsageError("--fhir-server without files needs --patient ID")
    source, fixture = _source(args, settings)
    now, clock_note = _clock(args, fixture)
    settings = replace(
        settings,
        # Each run is on its own: a throw-away store, so nothing is "already said".
        database_url=args.database_url or "sqlite://",
        fhir_servers=tuple(args.fhir_server or ()) or settings.fhir_servers,
        **({"clock": lambda: now} if now else {}),
    )
    engine = CdsEngine(settings, Store.from_url(settings.database_url))
    try:
        engine.store.ensure_schema()
        hook = source.get("hook") if isinstance(source, Mapping) else None
        service = engine.service(_service_id(args, engine.services, hook))
        request = _request(args, service, source)
        if args.show_request:
            json.dump(request, sys.stdout, indent=2, ensure_ascii=False)
            print()
            return 0
        if args.url:
            status, body = _post(args.url, service.id, request, args.lang)
        else:
            try:
                body = engine.evaluate(service.id, request, args.lang).body
                status = 200
            except InputError as exc:
                status, body = exc.status, outcome_body(exc.code, exc.message, exc.path)
        if status != 200:
            _print_error(status, body)
            return 1
        if args.json:
            json.dump(body, sys.stdout, indent=2, ensure_ascii=False)
            print()
        else:
            heading = f"{service.id} ({service.hook}), {args.lang}"
            if clock_note:
                heading += f", {clock_note}"
            print_cards(body.get("cards", []), heading, engine, args.lang, args.detail)
        return 0
    finally:
        engine.close()


def _request(args: argparse.Namespace, service: Any, source: Any) -> dict[str, Any]:
    drafts = [r for file in args.draft or () for r in _resources_in(Path(file))]
    authorization = None
    if args.token:
        authorization = {
            "access_token": args.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read user/Condition.read user/Observation.read "
            "user/MedicationRequest.read",
            "subject": PROG,
        }
    try:
        if isinstance(source, Mapping):
            request = dict(source)
            if args.fhir_server:
                request["fhirServer"] = args.fhir_server[0]
                if authorization:
                    request["fhirAuthorization"] = authorization
            return request
        return build_request(
            service,
            [*(source or ()), *drafts],
            patient_id=args.patient,
            fhir_server=args.fhir_server[0] if args.fhir_server and source is None else None,
            fhir_authorization=authorization,
        )
    except RequestBuildError as exc:
        hint = " (--draft FILE)" if "draft" in str(exc) else ""
        raise UsageError(f"{exc}{hint}") from None


def _post(base: str, service_id: str, request: Mapping[str, Any], lang: str) -> tuple[int, Any]:
    import httpx

    url = f"{base.rstrip('/')}/cds-services/{service_id}"
    try:
        response = httpx.post(url, json=request, headers={"Accept-Language": lang}, timeout=30)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {url}: {type(exc).__name__}; is the service up?") from None
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, outcome_body(
            "processing", response.text[:200] or response.reason_phrase, None
        )


def _print_error(status: int, body: Any) -> None:
    issues = body.get("issue", []) if isinstance(body, Mapping) else []
    print(f"{PROG}: the service answered {status}", file=sys.stderr)
    for issue in issues:
        where = ", ".join(issue.get("expression", []))
        print(
            f"  {issue.get('diagnostics', '')}" + (f" (at {where})" if where else ""),
            file=sys.stderr,
        )
    if status == 401:
        print("  the service requires a signed JWT (CDS_AUTH=jwt)", file=sys.stderr)


COLOURS = {"critical": "\033[1;31m", "warning": "\033[1;33m", "info": "\033[1;34m"}


def print_cards(
    cards: Sequence[Mapping[str, Any]],
    heading: str,
    engine: Any,
    lang: str,
    detail: bool = False,
    out: TextIO | None = None,
) -> None:
    """The cards as a readable table: indicator and summary, then rule, evidence level,
    source, suggestions (with their FHIR actions) and links, wrapped to the terminal."""
    out = out or sys.stdout
    colour = out.isatty() and not os.environ.get("NO_COLOR")
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    print(f"{len(cards)} card{'s' if len(cards) != 1 else ''} - {heading}", file=out)
    for number, card in enumerate(cards, 1):
        indicator = str(card.get("indicator", "")).upper()
        label = (
            f"{COLOURS.get(card.get('indicator', ''), '')}{indicator:<8}\033[0m"
            if colour
            else f"{indicator:<8}"
        )
        print(f"\n{number:>2}. {label}  {card.get('summary', '')}", file=out)
        rows: list[tuple[str, str]] = []
        source = card.get("source", {})
        rule = source.get("topic", {}).get("code", "")
        rows.append(("rule", rule))
        content = engine.library.cards.get(rule)
        if content is not None:
            rows.append(("evidence", " ".join(str(content.data["evidence_level"][lang]).split())))
        rows.append(
            (
                "source",
                f"{source.get('label', '')} <{source['url']}>"
                if source.get("url")
                else source.get("label", ""),
            )
        )
        for suggestion in card.get("suggestions", []):
            actions = "; ".join(_action(a) for a in suggestion.get("actions", []))
            star = "(recommended) " if suggestion.get("isRecommended") else ""
            rows.append(("suggestion", f"{star}{suggestion.get('label', '')} [{actions}]"))
        for link in card.get("links", []):
            rows.append(
                (
                    "link",
                    f"{link.get('label', '')} <{link.get('url', '')}> ({link.get('type', '')})",
                )
            )
        reasons = ", ".join(
            r.get("display", r.get("code", "")) for r in card.get("overrideReasons", [])
        )
        if reasons:
            rows.append(("override", reasons))
        for name, value in rows:
            lines = textwrap.wrap(value, width - 17) or [""]
            print(f"    {name:<11}  {lines[0]}", file=out)
            for line in lines[1:]:
                print(f"    {'':<11}  {line}", file=out)
        if detail:
            print("", file=out)
            for paragraph in str(card.get("detail", "")).split("\n"):
                print(textwrap.indent(paragraph, "      ") if paragraph else "", file=out)


def _action(action: Mapping[str, Any]) -> str:
    kind = action.get("type", "")
    if kind == "delete":
        return f"delete {action.get('resourceId', '')}"
    resource = action.get("resource") or {}
    return f"{kind} {resource.get('resourceType', '')}".strip()


# ----------------------------------------------------------------------------- knowledge


def cmd_check_knowledge(args: argparse.Namespace) -> int:
    from cds_service.devtools.check import KnowledgeChecks

    settings = _settings(args)
    print(f"Checking the knowledge (cards in {settings.cards_dir})")
    results = list(KnowledgeChecks(settings).run())
    for result in results:
        print(f"  {'ok  ' if result.ok else 'FAIL'}  {result.name:<11} {result.summary}")
        for problem in result.problems:
            print(f"          - {problem}")
        for note in result.notes:
            print(f"          note: {note}")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} checks failed: fix what is listed above.")
        return 1
    print(f"All {len(results)} checks passed.")
    return 0


# ----------------------------------------------------------------------------- fixtures


def _fixtures(args: argparse.Namespace) -> tuple[Path, list[Fixture]]:
    root = args.fixtures_dir or Settings.from_env().fixtures_dir
    found = list_fixtures(root)
    if not found:
        raise UsageError(f"no fixtures in {root} (--fixtures-dir or CDS_FIXTURES_DIR)")
    return root, found


def cmd_fixtures(args: argparse.Namespace) -> int:
    _, found = _fixtures(args)
    width = max(len(f.name) for f in found)
    columns = shutil.get_terminal_size((160, 24)).columns
    print(f"{'hook':<13} {'name':<{width}}  {'patient':<8} what it shows")
    for fixture in found:
        patient = str(fixture.request().get("context", {}).get("patientId", ""))
        room = max(30, columns - width - 26)
        summary = textwrap.shorten(fixture.description.split(":")[0], room, placeholder=" ...")
        print(f"{fixture.hook:<13} {fixture.name:<{width}}  {patient:<8} {summary}")
    return 0


def cmd_export_fixtures(args: argparse.Namespace) -> int:
    root, found = _fixtures(args)
    if args.names:
        chosen = []
        for name in args.names:
            fixture = find_fixture(root, name)
            if fixture is None:
                raise UsageError(f"{name}: no such fixture; `{PROG} fixtures` lists them")
            chosen.append(fixture)
        found = chosen
    bundle = transaction_bundle(f.request() for f in found)
    text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        patients = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        print(
            f"wrote {args.output}: {len(bundle['entry'])} resources of {patients} patients "
            f"(POST it to a FHIR server's base URL)",
            file=sys.stderr,
        )
    return 0


# ----------------------------------------------------------------------------- parser


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _port(text: str) -> int:
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")


def _positive(text: str) -> int:
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")


# Options several commands take, declared once (`_shared`); a command may word its own help
# or give a default.
SHARED_OPTIONS: dict[str, dict[str, Any]] = {
    "--cards-dir": {"type": Path, "help": "card content folder (CDS_CARDS_DIR)"},
    "--fixtures-dir": {"type": Path, "help": "fixtures folder (CDS_FIXTURES_DIR)"},
    "--lang": {"choices": SUPPORTED_LANGUAGES},
    "--fhir-server": {"action": "append", "metavar": "URL"},
    "--database-url": {},
}


def _shared(parser: argparse.ArgumentParser, flag: str, **own: Any) -> None:
    """Add the shared option `flag` to a command, with what `own` words differently."""
    parser.add_argument(flag, **{**SHARED_OPTIONS[flag], **own})


def _serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the CDS service over HTTP (gunicorn)",
        description="Serve the CDS service with gunicorn. Discovery: GET /cds-services; "
        "card preview page: GET /.",
        epilog=EPILOG,
    )
    serve.add_argument(
        "--host",
        help="address to bind (default 127.0.0.1; HOST)",
    )
    serve.add_argument(
        "--port",
        type=_port,
        help="port (default 8080; PORT)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        help="worker processes (default 2; WEB_CONCURRENCY)",
    )
    serve.add_argument(
        "--threads",
        type=_positive,
        help=f"threads per worker (default {DEFAULT_THREADS}; CDS_THREADS): more than the slow "
        "clients a worker may meet at once, each held for at most CDS_CLIENT_TIMEOUT_SECONDS",
    )
    _shared(serve, "--database-url", help="SQLAlchemy URL of the store (DATABASE_URL)")
    serve.add_argument("--auth", choices=("off", "jwt"), help="client authentication (CDS_AUTH)")
    serve.add_argument(
        "--trusted-issuers",
        type=Path,
        metavar="FILE",
        help="trusted JWT issuers, JSON (CDS_TRUSTED_ISSUERS)",
    )
    serve.add_argument(
        "--public-base-url",
        metavar="URL",
        help="the URL clients call, for the JWT aud (CDS_PUBLIC_BASE_URL)",
    )
    _shared(
        serve,
        "--fhir-server",
        help="FHIR server to fetch missing prefetch from; repeatable (CDS_FHIR_SERVERS)",
    )
    _shared(serve, "--lang", help="default card language (CDS_DEFAULT_LANGUAGE)")
    serve.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="LOG_LEVEL")
    _shared(serve, "--cards-dir")
    serve.set_defaults(func=cmd_serve)


def _store_parsers(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="bring the store's schema to this version",
        description="Apply the schema migrations this version has and the store lacks (run it "
        "once before starting the workers; `serve` does, and so does a worker that finds the "
        "store behind unless CDS_AUTO_MIGRATE=off). Prints the schema revision before and "
        "after. A store migrated by a newer version is left untouched (exit status 1).",
        epilog=EPILOG,
    )
    _shared(migrate, "--database-url", help="SQLAlchemy URL of the store (DATABASE_URL)")
    migrate.set_defaults(func=cmd_migrate)
    prune = commands.add_parser(
        "prune",
        help="delete what is past retention in the store now",
        description="Delete the issued cards, feedback, cautions and snoozes older than their "
        "retention (CDS_RETAIN_ISSUED, CDS_RETAIN_FEEDBACK, CDS_RETAIN_CAUTIONS, "
        "CDS_RETAIN_SNOOZES) and the expired JWT ids, in short batches; prints the rows "
        "deleted per table as JSON. The workers also do it every CDS_PRUNE_INTERVAL.",
        epilog=EPILOG,
    )
    _shared(prune, "--database-url", help="SQLAlchemy URL of the store (DATABASE_URL)")
    prune.add_argument(
        "--as-of",
        type=_date,
        metavar="DATE",
        help="prune as on this date, noon UTC (to rehearse a retention; default: now)",
    )
    prune.set_defaults(func=cmd_prune)


INVOKE_DESCRIPTION = """\
Run a CDS hook in this process (or against a running service with --url) and
print the cards: indicator, summary, rule, evidence level, source, suggestions.

SOURCE is one of:
  a fixture name           01-ssc-calcinosis (see `calcinosis-cds fixtures`)
  a CDS Hooks request      fixtures/order-sign/31-sign-aluminium-ckd4-coded.request.json
  a FHIR file              a Bundle or a resource of one patient
  a folder of FHIR files   every *.json in it (resources or Bundles)
or nothing, with --fhir-server URL --patient ID: the service fetches the data.
For order-select and order-sign, the order is a draft MedicationRequest: in the
files, or given with --draft FILE."""

INVOKE_EXAMPLES = """\
examples:
  calcinosis-cds invoke 01-ssc-calcinosis --lang fr
  calcinosis-cds invoke ./patient-folder --hook order-sign --draft order.json
  calcinosis-cds invoke --fhir-server http://127.0.0.1:8081/fhir --patient fix-01
  calcinosis-cds invoke 21-select-aluminium-egfr-22 --json"""


def _invoke_parser(commands: Any) -> None:
    invoke = commands.add_parser(
        "invoke",
        help="run a hook and print the cards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=INVOKE_DESCRIPTION,
        epilog=INVOKE_EXAMPLES,
    )
    add = invoke.add_argument
    add("source", nargs="?", metavar="SOURCE", help="fixture name, request or FHIR file, or folder")
    add(
        "--service",
        "--hook",
        dest="service",
        metavar="ID|HOOK",
        help="service id or hook (default: the request's hook, else patient-view)",
    )
    _shared(invoke, "--lang", default="en", help="card language (default en)")
    add("--json", action="store_true", help="print the CDS Hooks response as JSON")
    add("--detail", action="store_true", help="also print each card's Markdown detail")
    _shared(invoke, "--fhir-server", help="FHIR base URL to fetch the patient's data from")
    add("--patient", metavar="ID", help="patient id (required with --fhir-server and no files)")
    add(
        "--token",
        metavar="TOKEN",
        help="bearer token for the FHIR server (sent as fhirAuthorization)",
    )
    add(
        "--draft",
        action="append",
        metavar="FILE",
        help="a draft MedicationRequest (or Bundle of them) being ordered",
    )
    add(
        "--as-of",
        type=_date,
        metavar="DATE",
        help="evaluate as on this date (fixtures: their anchor date by default)",
    )
    add(
        "--url",
        metavar="BASE",
        help="send to a running service (e.g. http://127.0.0.1:8080) instead of in-process",
    )
    add(
        "--show-request",
        action="store_true",
        help="print the CDS Hooks request that would be sent, and stop",
    )
    _shared(invoke, "--database-url", help="store for issued cards (default: in memory, forgotten)")
    _shared(invoke, "--cards-dir")
    _shared(invoke, "--fixtures-dir")
    invoke.set_defaults(func=cmd_invoke)


def _check_parser(commands: Any) -> None:
    check = commands.add_parser(
        "check-knowledge",
        help="check the knowledge files (value sets, cards, citations, services, fixtures)",
        description="Load the clinical knowledge as the service does and check it: value sets "
        "(each code with where it was verified), card files (complete in en and fr, one per "
        "rule), citations and evidence levels, services and the safety table, and every "
        "fixture patient against its expected cards. Exit status 1 when a check fails.",
        epilog=EPILOG,
    )
    _shared(check, "--cards-dir")
    _shared(check, "--fixtures-dir")
    check.set_defaults(func=cmd_check_knowledge)


def _fixtures_parser(commands: Any) -> None:
    fixtures = commands.add_parser(
        "fixtures",
        help="list the fixture patients",
        description="List the synthetic fixture patients (hook, name, what they show).",
    )
    _shared(fixtures, "--fixtures-dir")
    fixtures.set_defaults(func=cmd_fixtures)


def _export_parser(commands: Any) -> None:
    export = commands.add_parser(
        "export-fixtures",
        help="write the fixture patients as a FHIR transaction Bundle",
        description="Write a FHIR R4 transaction Bundle that PUTs every resource of the fixture "
        "patients (ids kept, so patientId=fix-01 etc. work in a sandbox). Load it with: "
        "curl -X POST -H 'Content-Type: application/fhir+json' --data @fixtures.json BASE_URL",
    )
    export.add_argument(
        "names", nargs="*", metavar="NAME", help="fixtures to export (default: all)"
    )
    export.add_argument(
        "-o", "--output", metavar="FILE", help="output file (default: standard output)"
    )
    _shared(export, "--fixtures-dir")
    export.set_defaults(func=cmd_export_fixtures)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one small function per command, shared options from `_shared`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="CDS Hooks 2.0 service for calcinosis in systemic sclerosis.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in (
        _serve_parser,
        _store_parsers,
        _invoke_parser,
        _check_parser,
        _fixtures_parser,
        _export_parser,
    ):
        add_command(commands)
    return parser


def _die(message: str, status: int = 2) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logger = logging.getLogger("cds_service")
    level = logger.level
    if args.func is not cmd_serve:
        # A server's start-up warnings (development hash key...) mean nothing to a one-off run.
        logger.setLevel(logging.ERROR)
    try:
        return int(args.func(args))
    except UsageError as exc:
        _die(str(exc))
    except SettingsError as exc:
        _die(f"setting: {exc}")
    except StoreFailure as exc:
        _die(str(exc), status=1)
    except BrokenPipeError:  # e.g. `| head`
        return 0
    finally:
        logger.setLevel(level)
