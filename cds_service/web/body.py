"""What a view reads from the request: the engine of this app, the JSON body (checked before
it is parsed) and the card language."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request

from cds_service.engine import CdsEngine
from cds_service.errors import InputError, PayloadTooLarge, UnsupportedMediaType
from cds_service.hooks.validation import json_nesting_depth
from cds_service.settings import SUPPORTED_LANGUAGES

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def engine() -> CdsEngine:
    """The engine of the app serving this request."""
    return current_app.extensions["cds_engine"]


def json_body(max_bytes: int | None = None) -> dict[str, Any]:
    """The request's JSON object: media type, size (413 past MAX_CONTENT_LENGTH, or past
    `max_bytes` for a smaller kind of body), nesting depth, syntax and UTF-8 checked, each
    refusal naming where the body is wrong."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            "Content-Type must be application/json", path="header Content-Type"
        )
    too_large = f"body is larger than {max_bytes} bytes" if max_bytes else ""
    if max_bytes and (request.content_length or 0) > max_bytes:
        raise PayloadTooLarge(too_large, path="$")  # refused before it is read
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if max_bytes and len(raw) > max_bytes:
        raise PayloadTooLarge(too_large, path="$")  # a chunked body: no length announced
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
