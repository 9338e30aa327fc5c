"""What runs around every request, in this order:

1. `start_clock`: the time of every request includes authentication; the request id is
   settled (the client's X-Request-ID if it is sane, else a new one);
2. `authenticate`: with CDS_AUTH=jwt, a trusted issuer's JWT on every /cds-services call;
3. the view;
4. `cors`, then `request_id_header`, then `security_headers`, then `observe` (metrics and the
   call's log line), which runs last so that it sees the final status.

Flask runs after-request functions in the reverse order of their registration, hence the
order of `init_app`."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from flask import Flask, Response, current_app, g, request

from cds_service.observability import CALL_REQUEST_ID, Metrics, service_labels
from cds_service.trust import AuthError, JwtVerifier
from cds_service.web.body import engine

log = logging.getLogger("cds_service.http")

# Endpoint -> the message of its log line (one per call, written once the status is known).
CALL_LOG_MESSAGES = {"cds_hooks.invoke": "hook call", "cds_hooks.feedback": "feedback"}

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is echoed only if it is this plain: it goes into log lines and a
# response header, so no spaces, quotes, control characters or anything longer than 128.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


def measure(action: Callable[[Metrics], None]) -> None:
    """Record a metric, if metrics are on (CDS_METRICS); recording never raises."""
    metrics = engine().metrics
    if metrics is not None:
        action(metrics)


def service_fields(service_id: str | None) -> dict[str, str]:
    """The service and hook of a call, for logs (the same values as the metrics' labels)."""
    service, hook = service_labels(engine().hooks, service_id)
    return {"service": service, "hook": hook}


def request_id() -> str:
    """The id of the current request: the client's X-Request-ID when it is sane, else a new
    one (an insane one is replaced, never echoed). Settled once per request."""
    settled = g.get("request_id")
    if settled is None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        settled = offered if SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        g.request_id = settled
        g.request_id_token = CALL_REQUEST_ID.set(settled)  # on every line of the call
    return settled


def end_call_log_context(_exc: BaseException | None) -> None:
    """The thread serves another request next: its lines no longer carry this one's id."""
    if (token := g.pop("request_id_token", None)) is not None:
        try:
            CALL_REQUEST_ID.reset(token)
        except ValueError:  # set in another context: none of this call's lines are left
            CALL_REQUEST_ID.set(None)


def start_clock() -> None:
    g.started = time.perf_counter()
    g.log_fields = {}  # structured fields of this call's log line, filled in by the views
    request_id()


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
        log.warning(
            "refused a call to %s: %s",
            request.path,
            exc.reason,
            extra={"request_id": request_id()},
        )
        # An empty body, typed as the rest of the API (never an HTML page).
        return Response(
            status=401, headers={"WWW-Authenticate": "Bearer"}, content_type="application/json"
        )
    return None


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
            response.headers["Access-Control-Allow-Headers"] = (
                f"Authorization, Content-Type, {REQUEST_ID_HEADER}"
            )
            response.headers["Access-Control-Max-Age"] = "86400"
        else:
            # Without it, a browser client's script cannot read the request id.
            response.headers["Access-Control-Expose-Headers"] = REQUEST_ID_HEADER
    return response


def request_id_header(response: Response) -> Response:
    """The request id on every answer, to quote when reporting a problem with the call (the
    call's log lines carry it)."""
    response.headers[REQUEST_ID_HEADER] = request_id()
    return response


def security_headers(response: Response) -> Response:
    """A JSON API: nothing to sniff, frame, cache or load."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def observe(response: Response) -> Response:
    """Metrics and the log line of each hook and feedback call, with the final status."""
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
            "request_id": request_id(),
            **service_fields(service_id),
            **g.get("log_fields", {}),
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        }
        log.log(level, message, extra=fields)
    return response


def init_app(app: Flask) -> None:
    app.before_request(start_clock)
    app.before_request(authenticate)
    # After-request functions run last registered first: cors, request_id_header,
    # security_headers, observe.
    app.after_request(observe)
    app.after_request(security_headers)
    app.after_request(request_id_header)
    app.after_request(cors)
    app.teardown_request(end_call_log_context)
