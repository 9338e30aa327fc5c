"""Observability: Prometheus metrics and structured (JSON) logs.

Metrics (served at GET /metrics, see the README):

- ``cds_request_duration_seconds{route, service, hook, status}``: every HTTP request;
- ``cds_cards_total{service, rule, indicator}``: cards issued by the hook calls;
- ``cds_feedback_total{service, outcome}``: feedback entries stored;
- ``cds_fhir_fetch_total{key, outcome}`` and ``cds_fhir_fetch_duration_seconds{outcome}``:
  prefetch queries fetched (or not) from the EHR's FHIR server;
- ``cds_build_info{version, knowledge_version}``: always 1, says what is running.

Every label value comes from a bounded set (route templates, the service catalogue, rule ids,
indicators, prefetch keys, status codes, fixed outcomes): never a patient id, a token or
anything else the caller chose.

Outside gunicorn (tests, one process) each app owns its registry, so that building many apps
in one process never collides. Under gunicorn, ``cds_service.gunicorn_conf`` points
``PROMETHEUS_MULTIPROC_DIR`` at a directory shared by the workers: each worker writes its
values there and /metrics, whichever worker answers, adds up those of all of them.

prometheus_client decides when it is first imported whether it runs in multiprocess mode. The
gunicorn master imports this module for its log formatters before ``on_starting`` sets that
variable, so prometheus_client is imported here only when metrics are built (in the workers).

Logs: one JSON object per line (``LOG_FORMAT=json``, the default) or one readable line
(``LOG_FORMAT=text``), with the structured fields a call passes as ``extra`` (request_id,
service, hook, hookInstance, status, duration_ms, cards, lang, ...). Exceptions are logged by
type and stack only: their messages may quote request data.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import tomllib
import traceback
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import cache, wraps
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# Seconds. Hook calls answer in 2-150 ms; the last buckets catch slow stores and fetches.
REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# One query to the EHR's FHIR server: bounded by CDS_FHIR_TIMEOUT_MS / CDS_FHIR_DEADLINE_MS.
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.2, 2.5, 5.0)

# Outcomes of one prefetch query (cds_fhir_fetch_total{outcome}).
FETCH_OUTCOMES = (
    "ok",
    "http_error",  # the FHIR server answered a status other than 200
    "timeout",  # one request took longer than CDS_FHIR_TIMEOUT_MS
    "deadline",  # the whole fetch took longer than CDS_FHIR_DEADLINE_MS
    "connection_error",
    "too_large",  # larger than CDS_FHIR_MAX_QUERY_BYTES, or the call's CDS_FHIR_MAX_CALL_BYTES
    "invalid_response",  # not FHIR JSON, an OperationOutcome, a next link off the server...
    "refused_server",  # fhirServer is not one this service may query (nothing was sent)
    "no_server",  # the request names no fhirServer (nothing was sent)
)
NONE = "none"  # label of routes that concern no service
UNKNOWN = "unknown"  # label of a service id the catalogue does not have
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Set by `calcinosis-cds serve` for gunicorn_conf.when_ready, which prints "serving on ..." once
# the port is bound: "preview" or "no-preview" (a hand-over between the two, not a setting).
SERVE_BANNER_ENV = "CDS_SERVE_BANNER"
DISTRIBUTION = "calcinosis-cds"  # the package's name in pyproject.toml
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@cache
def package_version() -> str:
    """The version of the installed package; from pyproject.toml beside the package when it
    is not installed (a bare checkout); "unknown" if neither says."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
        return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def service_labels(hooks: Mapping[str, str], service_id: str | None) -> tuple[str, str]:
    """(service, hook) of a call, for labels and log fields: `none` for routes without a
    service, `unknown` for an id the catalogue (`hooks`: service id -> hook) does not have,
    whatever the caller put in the URL."""
    if service_id is None:
        return NONE, NONE
    hook = hooks.get(service_id)
    return (service_id, hook) if hook is not None else (UNKNOWN, UNKNOWN)


def _never_raises(observe: Callable[..., None]) -> Callable[..., None]:
    """A metric must not cost a clinician the cards: a failure to record is logged (its type
    only), never raised."""

    @wraps(observe)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            observe(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            logging.getLogger("cds_service.metrics").error(
                "could not record a metric: %s", type(exc).__name__
            )

    return guarded


def multiprocess_dir() -> str | None:
    """The directory shared by gunicorn workers, when prometheus_client runs in multiprocess
    mode (a prometheus_client setting, read from the environment as prometheus_client does)."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The service's metrics. Build them with `create_metrics`."""

    def __init__(
        self,
        services: Mapping[str, str],
        registry: CollectorRegistry | None,
        shared_dir: str | None = None,
    ) -> None:
        # imported late: see the module docstring
        from prometheus_client import Counter, Gauge, Histogram

        self.services = dict(services)  # service id -> hook: the only service labels
        self._registry = registry
        self._shared_dir = shared_dir
        self.requests = Histogram(
            "cds_request_duration_seconds",
            "HTTP requests: time from the request to the response, by route (template), "
            "service, hook and status.",
            ("route", "service", "hook", "status"),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.cards = Counter(
            "cds_cards_total",
            "Cards issued by the hook calls, by service, rule and indicator.",
            ("service", "rule", "indicator"),
            registry=registry,
        )
        self.feedback = Counter(
            "cds_feedback_total",
            "Feedback entries stored, by service and outcome (accepted / overridden).",
            ("service", "outcome"),
            registry=registry,
        )
        self.fetches = Counter(
            "cds_fhir_fetch_total",
            "Prefetch queries fetched from the EHR's FHIR server, by prefetch key and outcome.",
            ("key", "outcome"),
            registry=registry,
        )
        self.fetch_seconds = Histogram(
            "cds_fhir_fetch_duration_seconds",
            "Prefetch queries sent to the EHR's FHIR server: time until answered or given up "
            "(all pages), by outcome.",
            ("outcome",),
            buckets=FETCH_BUCKETS,
            registry=registry,
        )

        self.store_fallbacks = Counter(
            "cds_store_fallback_total",
            "Store operations a call did without (issue 15): the JWT replay check kept in the "
            "process's memory (jti), issued cards buffered for later (issued), buffered cards "
            "dropped because the buffer was full (dropped).",
            ("kind",),
            registry=registry,
        )
        self.pruned = Counter(
            "cds_store_pruned_total",
            "Rows the periodic prune deleted past retention (CDS_RETAIN_*), by table.",
            ("table",),
            registry=registry,
        )
        self.prune_failures = Counter(
            "cds_store_prune_failures_total",
            "Periodic prunes that did not finish (the store did not answer, or failed).",
            registry=registry,
        )
        # "livemax": one series whichever worker answers, and a worker that is gone (one
        # that ran other code, before a reload) no longer counts.
        self.build = Gauge(
            "cds_build_info",
            "What is running: the package version and the knowledge version (always 1).",
            ("version", "knowledge_version"),
            multiprocess_mode="livemax",
            registry=registry,
        )

    # ------------------------------------------------------------------------- labels

    def service_labels(self, service_id: str | None) -> tuple[str, str]:
        return service_labels(self.services, service_id)

    # ------------------------------------------------------------------------- observations

    @_never_raises
    def build_info(self, knowledge_version: str) -> None:
        self.build.labels(package_version(), knowledge_version).set(1)

    @_never_raises
    def store_fallback(self, kind: str) -> None:
        self.store_fallbacks.labels(kind).inc()

    @_never_raises
    def store_pruned(self, deleted: Mapping[str, int] | None) -> None:
        """One periodic prune: rows deleted by table, or None when it did not finish."""
        if deleted is None:
            self.prune_failures.inc()
            return
        for table, count in deleted.items():
            self.pruned.labels(table).inc(count)

    @_never_raises
    def request(self, route: str, service_id: str | None, status: int, seconds: float) -> None:
        service, hook = self.service_labels(service_id)
        self.requests.labels(route, service, hook, str(status)).observe(seconds)

    @_never_raises
    def cards_issued(self, service_id: str, issued: Iterable[tuple[str, str]]) -> None:
        """`issued`: (rule id, indicator) of each card."""
        service, _hook = self.service_labels(service_id)
        for rule, indicator in issued:
            self.cards.labels(service, rule, indicator).inc()

    @_never_raises
    def feedback_stored(self, service_id: str, outcomes: Iterable[str]) -> None:
        service, _hook = self.service_labels(service_id)
        for outcome in outcomes:
            self.feedback.labels(service, outcome).inc()

    @_never_raises
    def fetched(self, key: str, outcome: str, seconds: float | None) -> None:
        """One prefetch query; `seconds` is None when nothing was sent."""
        if outcome not in FETCH_OUTCOMES:
            outcome = "invalid_response"
        self.fetches.labels(key, outcome).inc()
        if seconds is not None:
            self.fetch_seconds.labels(outcome).observe(seconds)

    # ------------------------------------------------------------------------- exposition

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type. In multiprocess
        mode, those of every worker (living or exited) added up."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
        )

        registry = self._registry
        if self._shared_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self._shared_dir)
        assert registry is not None
        return generate_latest(registry), CONTENT_TYPE_LATEST


_process_metrics: Metrics | None = None
_process_lock = threading.Lock()


def create_metrics(services: Mapping[str, str]) -> Metrics:
    """Metrics for a new app.

    Alone in its process, an app gets its own registry (two apps never share a time series).
    In multiprocess mode the values live in files of this process, one per metric and label
    set: two metric objects for one series would overwrite each other's values, so every app
    of the process shares one `Metrics`."""
    shared = multiprocess_dir()
    if shared is None:
        from prometheus_client import CollectorRegistry

        return Metrics(services, CollectorRegistry(auto_describe=True))
    global _process_metrics
    with _process_lock:
        if _process_metrics is None:
            _process_metrics = Metrics(services, None, shared_dir=shared)
        return _process_metrics


# ----------------------------------------------------------------------------- logs

LOG_FORMATS = ("json", "text")
MAX_FIELD_CHARS = 200  # longer strings are cut (a field is never a document)...
LONG_FIELDS = {"stack": 20_000}  # ...but a stack trace (file names and source lines)
HOOK_INSTANCE_CHARS = 64  # a UUID is 36

# Attributes every LogRecord has; anything else on a record came as `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def hook_instance(value: Any) -> str | None:
    """The caller's hookInstance as a log field: a string, cut to a sane length."""
    return value[:HOOK_INSTANCE_CHARS] if isinstance(value, str) else None


def _field(value: Any, limit: int = MAX_FIELD_CHARS) -> Any:
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k)[:limit]: _field(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_field(v, limit) for v in value]
    return str(value)[:limit]


# The X-Request-ID of the call this thread is serving (set and reset by the web layer): every
# log line written during the call carries it, the FHIR fetch's and the store's included.
CALL_REQUEST_ID: ContextVar[str | None] = ContextVar("cds_call_request_id", default=None)


def _stamp_call_id(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A record factory that notes the call's id when the record is made (it may be formatted
    later, after the call). Under a private name: `extra={"request_id": ...}` must still work."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record._cds_call_id = CALL_REQUEST_ID.get()
        return record

    make._cds_stamps = True  # type: ignore[attr-defined]
    return make


if not getattr(logging.getLogRecordFactory(), "_cds_stamps", False):
    logging.setLogRecordFactory(_stamp_call_id(logging.getLogRecordFactory()))


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: its `extra`, and for gunicorn's access log the
    request (method, path without its query string, status, size, duration) and the
    X-Request-ID the service answered with."""
    fields = {
        key: _field(value, LONG_FIELDS.get(key, MAX_FIELD_CHARS))
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }
    if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
        atoms = record.args
        fields.update(
            method=_field(atoms.get("m")),
            path=_field(atoms.get("U")),
            status=_int(atoms.get("s")),
            bytes=_int(atoms.get("B")),
            duration_ms=round((_int(atoms.get("D")) or 0) / 1000, 1),
        )
        # gunicorn names each response header "{name}o", in lower case. Absent when the app
        # did not answer (a request cut before it reached Flask).
        if (request_id := atoms.get("{x-request-id}o")) is not None:
            fields["request_id"] = _field(request_id)
    elif "request_id" not in fields and (call := getattr(record, "_cds_call_id", None)):
        fields["request_id"] = call
    return fields


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _message(record: logging.LogRecord) -> str:
    if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
        return "request"  # its parts are fields; the query string is left out
    return record.getMessage()


def _exception_fields(record: logging.LogRecord) -> dict[str, Any]:
    """An exception by type and stack only: its message may quote request data."""
    if not record.exc_info or record.exc_info[0] is None:
        return {}
    kind, _exc, tb = record.exc_info
    return {"exc_type": kind.__name__, "stack": "".join(traceback.format_tb(tb))}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, pid, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "pid": record.process,
        }
        for key, value in {**record_fields(record), **_exception_fields(record)}.items():
            entry.setdefault(key, value)
        # ASCII only: a lone surrogate or a control character cannot break the line.
        return json.dumps(entry, ensure_ascii=True, default=str, separators=(", ", ": "))


class TextFormatter(logging.Formatter):
    """For humans: `time level logger message key=value ...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = _message(record)
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        fields = {**record_fields(record), **_exception_fields(record)}
        parts = [f"{key}={_text(value)}" for key, value in fields.items() if value is not None]
        return " ".join([line, *parts])


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or NONE
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and text.isprintable() and " " not in text and '"' not in text:
        return text
    return json.dumps(text)  # quoted, with newlines and the like escaped


def make_formatter(log_format: str = "json") -> logging.Formatter:
    """The formatter of LOG_FORMAT (also named by the gunicorn logging configuration)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")


class LogHandler(logging.Handler):
    """Writes to the current sys.stderr (looked up at each record, so that a replaced stream,
    as under test runners, is followed rather than kept)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.handleError(record)


def configure_logging(level: str, log_format: str) -> None:
    """Send the service's logs (and, unless something else set up logging, everything else)
    to stderr as `log_format` lines.

    - the root logger already has our handler (gunicorn's configuration put it there, or an
      earlier app): its format and the level are updated;
    - the root logger has no handler: ours is added, with the level;
    - someone else configured logging (a test runner, an embedding application): left as is.
    """
    formatter = make_formatter(log_format)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, LogHandler)]
    if not ours and not root.handlers:
        handler = LogHandler()
        root.addHandler(handler)
        ours = [handler]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter)
        root.setLevel(level)
    # httpx logs each request URL at INFO; FHIR query URLs carry the patient id.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """A logging.config dictionary for gunicorn: its error and access logs, and the root
    logger (so the service's logs), through our handler in `log_format`."""
    make_formatter(log_format)  # refuses an unknown format now, not in dictConfig
    handler = {"class": f"{__name__}.LogHandler", "formatter": "cds"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"cds": {"()": f"{__name__}.make_formatter", "log_format": log_format}},
        "handlers": {"cds": handler},
        "root": {"level": "INFO", "handlers": ["cds"]},
        "loggers": {
            # No level: gunicorn's own (--log-level) stays in force.
            "gunicorn.error": {"handlers": ["cds"], "propagate": False},
            "gunicorn.access": {"handlers": ["cds"], "propagate": False},
        },
    }
