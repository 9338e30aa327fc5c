"""The CDS Hooks protocol over HTTP: routes, body parsing, language, CORS, JSON errors."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from cds_service.engine import CdsEngine
from cds_service.errors import InputError, UnsupportedMediaType
from cds_service.settings import SUPPORTED_LANGUAGES
from cds_service.terminology import YAML_LOADER
from cds_service.trust import AuthError, JwtVerifier, VerifiedClient

log = logging.getLogger("cds_service.http")
bp = Blueprint("cds_hooks", __name__)

ISSUE_CODES = {400: "invalid", 404: "not-found", 405: "not-supported", 413: "too-long"}


def engine() -> CdsEngine:
    return current_app.extensions["cds_engine"]


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
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": message}
    if path:
        issue["expression"] = [path]
    response = jsonify({"resourceType": "OperationOutcome", "issue": [issue]})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(InputError)
    def _input_error(exc: InputError) -> Response:
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
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error(
            "unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.path, frames
        )
        return operation_outcome(500, "exception", "internal error; the event was logged", None)


# ----------------------------------------------------------------------------- helpers


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(rb"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def json_depth(raw: bytes) -> int:
    """How deeply a JSON text nests (strings removed first), without parsing it."""
    depth = deepest = 0
    for bracket in _JSON_BRACKETS.findall(_JSON_STRING.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _json_body() -> dict[str, Any]:
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            "Content-Type must be application/json", path="header Content-Type"
        )
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    limit = engine().settings.max_json_depth
    if json_depth(raw) > limit:
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
    started = time.perf_counter()
    cds = engine()
    cds.service(service_id)  # 404 before reading the body
    body = _json_body()
    lang = negotiate_language()
    client: VerifiedClient | None = g.get("client")
    servers = client.issuer.fhir_servers if client is not None else None
    evaluation = cds.evaluate(service_id, body, lang, fhir_servers=servers)
    log.info(
        "service=%s hookInstance=%s cards=%s lang=%s ms=%.1f",
        service_id,
        body.get("hookInstance"),
        ",".join(f"{c.rule_id}:{c.indicator}" for c in evaluation.issued) or "none",
        lang,
        (time.perf_counter() - started) * 1000,
    )
    response = jsonify(evaluation.body)
    response.headers["Content-Language"] = lang
    return response


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    cds = engine()
    cds.service(service_id)
    stored = cds.receive_feedback(service_id, _json_body())
    log.info("service=%s feedback entries=%d", service_id, stored)
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
