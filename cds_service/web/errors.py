"""Every error as JSON: a FHIR OperationOutcome naming the JSON path at fault, never a stack
trace (the unexpected ones are logged by type and place, never with request data)."""

from __future__ import annotations

import logging
import traceback

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect

from cds_service.errors import InputError, StoreUnavailable, outcome_body
from cds_service.web.middleware import request_id

log = logging.getLogger("cds_service.http")

ISSUE_CODES = {400: "invalid", 404: "not-found", 405: "not-supported", 413: "too-long"}


def operation_outcome(status: int, code: str, message: str, path: str | None) -> Response:
    """A JSON error body: a FHIR OperationOutcome naming the JSON path at fault."""
    response = jsonify(outcome_body(code, message, path))
    response.status_code = status
    return response


def _input_error(exc: InputError) -> Response:
    # The log line of the call names where the input was wrong, never what it held.
    g.setdefault("log_fields", {}).update(error=exc.code, error_path=exc.path)
    response = operation_outcome(exc.status, exc.code, exc.message, exc.path)
    if isinstance(exc, StoreUnavailable):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _no_redirect() -> Response | None:
    """A path the router would redirect ("//cds-services", a missing or extra slash) is not an
    endpoint of this API: 404 in JSON, as any unknown path (Flask answers routing redirects
    itself, before any error handler)."""
    if isinstance(request.routing_exception, RequestRedirect):
        return operation_outcome(404, "not-found", "no such endpoint; see GET /cds-services", None)
    return None


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = {
        404: "no such endpoint; see GET /cds-services",
        405: f"method {request.method} is not allowed here",
        413: f"request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes",
    }.get(status, exc.description or exc.name)
    response = operation_outcome(status, ISSUE_CODES.get(status, "processing"), message, None)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return response


def _unexpected(exc: Exception) -> Response:
    # The exception message may quote request data: log only its type and where it arose.
    log.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        request.path,
        extra={
            "request_id": request_id(),  # the id the client gets in X-Request-ID
            "exc_type": type(exc).__name__,
            "stack": "".join(traceback.format_tb(exc.__traceback__)),
        },
    )
    return operation_outcome(500, "exception", "internal error; the event was logged", None)


def init_app(app: Flask) -> None:
    app.before_request(_no_redirect)
    app.register_error_handler(InputError, _input_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
