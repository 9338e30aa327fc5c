"""The CDS Hooks protocol over HTTP: routes, body parsing, language, CORS, JSON errors,
metrics and the log line of each hook and feedback call."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Flask, Response, abort, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from cds_service.engine import CdsEngine
from cds_service.errors import InputError, UnsupportedMediaType, outcome_body
from cds_service.hooks.validation import json_nesting_depth
from cds_service.observability import Metrics, hook_instance, service_labels
from cds_service.settings import SUPPORTED_LANGUAGES
from cds_service.terminology import YAML_LOADER
from cds_service.trust import AuthError, JwtVerifier, VerifiedClient

log = logging.getLogger("cds_service.http")
bp = Blueprint("cds_hooks", __name__)

ISSUE_CODES = {400: "invalid", 404: "not-found", 405: "not-supported", 413: "too-long"}


def engine() -> CdsEngine:
    return current_app.extensions["cds_engine"]


# --------------------------------------------------------------------------- observability

# Endpoint -> the message of its log line (one per call, written once the status is known).
CALL_LOG_MESSAGES = {"cds_hooks.invoke": "hook call", "cds_hooks.feedback": "feedback"}


@bp.before_app_request
def start_clock() -> None:
    """Runs first: the time of every request includes authentication."""
    g.started = time.perf_counter()
    g.log_fields = {}  # structured fields of this call's log line, filled in by the views


def measure(action: Callable[[Metrics], None]) -> None:
    """Record a metric, if metrics are on (CDS_METRICS); recording never raises."""
    metrics = engine().metrics
    if metrics is not None:
        action(metrics)


def service_fields(service_id: str | None) -> dict[str, str]:
    """The service and hook of a call, for logs (the same values as the metrics' labels)."""
    service, hook = service_labels(engine().hooks, service_id)
    return {"service": service, "hook": hook}


@bp.after_app_request
def observe(response: Response) -> Response:
    """Registered before the other after-request functions, so it runs after them and sees
    the final status."""
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    rule = request.url_rule
    route = rule.rule if rule is not None else "unmatched"
    service_id = (request.view_args or {}).get("service_id") if rule is not None else None
    status = response.status_code
    measure(lambda m: m.request(route, service_id, status, seconds))
    message = CALL_LOG_MESSAGES.get(request.endpoint or "")
    if message is not None and request.method == "POST":
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        fields = {
            **service_fields(service_id),
            **g.get("log_fields", {}),
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        }
        log.log(level, message, extra=fields)
    return response


# --------------------------------------------------------------------------- authentication


@bp.before_app_request
def authenticate() -> Response | None:
    """With CDS_AUTH=jwt, every discovery, service and feedback call carries a JWT from a
    trusted issuer whose `aud` is the URL called. Any failure: a bare 401, the reason logged
    (never the token)."""
    verifier: JwtVerifier | None = current_app.extensions.get("cds_verifier")
    g.client = None
    if verifier is None or request.method == "OPTIONS":
        return None
    if not request.path.startswith("/cds-services"):
        return None  # /healthz and /openapi.json are public
    base = engine().settings.public_base_url or request.host_url.rstrip("/")
    try:
        g.client = verifier.verify(request.headers.get("Authorization"), base + request.path)
    except AuthError as exc:
        log.warning("refused a call to %s: %s", request.path, exc.reason)
        return Response(status=401, headers={"WWW-Authenticate": "Bearer"})
    return None


# ----------------------------------------------------------------------------- errors


def operation_outcome(status: int, code: str, message: str, path: str | None) -> Response:
    """A JSON error body: a FHIR OperationOutcome naming the JSON path at fault."""
    response = jsonify(outcome_body(code, message, path))
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(InputError)
    def _input_error(exc: InputError) -> Response:
        # The log line of the call names where the input was wrong, never what it held.
        g.setdefault("log_fields", {}).update(error=exc.code, error_path=exc.path)
        return operation_outcome(exc.status, exc.code, exc.message, exc.path)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = {
            404: "no such endpoint; see GET /cds-services",
            405: f"method {request.method} is not allowed here",
            413: f"request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes",
        }.get(status, exc.description or exc.name)
        return operation_outcome(status, ISSUE_CODES.get(status, "processing"), message, None)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The exception message may quote request data: log only its type and where it arose.
        log.error(
            "unhandled %s on %s %s",
            type(exc).__name__,
            request.method,
            request.path,
            extra={
                "exc_type": type(exc).__name__,
                "stack": "".join(traceback.format_tb(exc.__traceback__)),
            },
        )
        return operation_outcome(500, "exception", "internal error; the event was logged", None)


# ----------------------------------------------------------------------------- helpers


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _json_body() -> dict[str, Any]:
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            "Content-Type must be application/json", path="header Content-Type"
        )
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    limit = engine().settings.max_json_depth
    if json_nesting_depth(raw, limit) > limit:
        raise InputError(f"body nests deeper than {limit} levels", path="$")

    def _no_constants(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path="$"
        ) from None
    except (ValueError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "nesting too deep"
        raise InputError(f"body is not valid JSON: {message}", path="$") from None
    if not isinstance(body, dict):
        raise InputError("body must be a JSON object", path="$")
    if _SURROGATE_ESCAPE.search(raw):  # only then pay for the check
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("body contains an unpaired UTF-16 surrogate", path="$") from None
    return body


def negotiate_language() -> str:
    """The card language: the best match of Accept-Language, else the configured default."""
    default = engine().settings.default_language
    return request.accept_languages.best_match(SUPPORTED_LANGUAGES, default=default) or default


# ----------------------------------------------------------------------------- routes


@bp.get("/cds-services")
def discovery() -> Response:
    return jsonify(engine().discovery())


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    cds = engine()
    cds.service(service_id)  # 404 before reading the body
    body = _json_body()
    fields = g.log_fields  # the call's log line (written by `observe`)
    if (instance := hook_instance(body.get("hookInstance"))) is not None:
        fields["hookInstance"] = instance
    lang = negotiate_language()
    fields["lang"] = lang
    client: VerifiedClient | None = g.get("client")
    servers = client.issuer.fhir_servers if client is not None else None
    evaluation = cds.evaluate(service_id, body, lang, fhir_servers=servers)
    fields["cards"] = [f"{c.rule_id}:{c.indicator}" for c in evaluation.issued]
    measure(
        lambda m: m.cards_issued(service_id, ((c.rule_id, c.indicator) for c in evaluation.issued))
    )
    response = jsonify(evaluation.body)
    response.headers["Content-Language"] = lang
    return response


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    cds = engine()
    cds.service(service_id)
    body = _json_body()
    stored = cds.receive_feedback(service_id, body)
    outcomes = [item["outcome"] for item in body["feedback"]]  # validated: accepted/overridden
    g.log_fields.update(entries=stored, outcomes=dict(Counter(outcomes)))
    measure(lambda m: m.feedback_stored(service_id, outcomes))
    return jsonify({"stored": stored})


@bp.get("/cds-services/<service_id>/feedback/summary")
def feedback_summary(service_id: str) -> Response:
    return jsonify(engine().feedback_summary(service_id))


OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.yaml"


@cache
def _openapi() -> dict[str, Any]:
    return yaml.load(OPENAPI_FILE.read_text(encoding="utf-8"), Loader=YAML_LOADER)  # noqa: S506


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this service, for integrators and fuzzers."""
    return jsonify(_openapi())


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics (all workers added up under gunicorn); 404 with CDS_METRICS=off.
    Public like /healthz: restrict it at the load balancer."""
    observed = engine().metrics
    if observed is None:
        abort(404)
    body, content_type = observed.exposition()
    return Response(body, content_type=content_type)


@bp.get("/healthz")
def healthz() -> Response:
    cds = engine()
    ok = cds.store.healthy()
    response = jsonify(
        {"status": "ok" if ok else "unavailable", "knowledgeVersion": cds.knowledge_version}
    )
    response.status_code = 200 if ok else 503
    return response


# ----------------------------------------------------------------------------- CORS


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


@bp.after_app_request
def security_headers(response: Response) -> Response:
    """A JSON API: nothing to sniff, frame, cache or load."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.after_app_request
def cors(response: Response) -> Response:
    """Let browser-based CDS clients (e.g. the CDS Hooks Sandbox) call the service."""
    if request.method == "OPTIONS" and response.status_code == 200:
        response.status_code = 204  # a preflight answer has no body
        response.headers.pop("Content-Type", None)
    origin = request.headers.get("Origin")
    allowed = engine().settings.cors_origins
    if origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        response.vary.add("Origin")
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "86400"
    return response
