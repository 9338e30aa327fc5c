"""What a view reads from the request: the engine of this app, the JSON body (checked before
it is parsed) and the card language."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from flask import current_app, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from cds_service.engine import CdsEngine
from cds_service.errors import InputError, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from cds_service.hooks.validation import json_nesting_depth
from cds_service.serving import read_deadline_passed
from cds_service.settings import SUPPORTED_LANGUAGES

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Every digit becomes "0", every other byte a space: a run of 19 digits is the only way to write
# an integer that orjson reads as a float (below -2**63 or above 2**64 - 1), not as an int.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19


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
    raw = _read_body(max_bytes or current_app.config["MAX_CONTENT_LENGTH"])
    limit = engine().settings.max_json_depth
    if json_nesting_depth(raw, limit) > limit:
        raise InputError(f"body nests deeper than {limit} levels", path="$")

    body, by_orjson = _parsed(raw)
    if not isinstance(body, dict):
        raise InputError("body must be a JSON object", path="$")
    # orjson refuses lone surrogates; after the standard library, an escaped one is looked for
    # (and only then is the check paid for).
    if not by_orjson and _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("body contains an unpaired UTF-16 surrogate", path="$") from None
    return body


def _parsed(raw: bytes) -> tuple[Any, bool]:
    """The JSON value of `raw`, and whether orjson read it (about twice as fast); else the
    standard library did, which gives a refusal its message (line and column) and reads what
    orjson reads otherwise or refuses: integers past 64 bits (orjson makes them floats, so a
    long run of digits sends the body there first), numbers past the float range (infinity),
    lone surrogates (refused with their own message by json_body), a byte order mark, UTF-16."""
    if raw.translate(_DIGITS_AS_ZEROS).find(_LONG_DIGIT_RUN) < 0:
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass  # the standard library says why, or reads it

    def _no_constants(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(raw, parse_constant=_no_constants), False
    except json.JSONDecodeError as exc:
        raise InputError(
            f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path="$"
        ) from None
    except (ValueError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "nesting too deep"
        raise InputError(f"body is not valid JSON: {message}", path="$") from None


def _read_body(max_bytes: int) -> bytes:
    """The raw body, refused past `max_bytes` (413) whether its length is announced or not (a
    chunked body is read one byte past the limit to know, never cut and processed), and
    refused with a JSON error when its framing is broken (400) or the client ran out of time
    to send it (408, see cds_service/serving.py)."""
    too_large = PayloadTooLarge(f"body is larger than {max_bytes} bytes", path="$")
    announced = request.content_length
    if announced is not None and announced > max_bytes:
        raise too_large  # refused before it is read
    try:
        if announced is None and request.environ.get("wsgi.input_terminated"):
            raw = request.environ["wsgi.input"].read(max_bytes + 1)  # chunked
        else:
            raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise too_large from None
    except Exception as exc:  # noqa: BLE001 - whatever the server's reader raises, say why
        if isinstance(exc, ClientDisconnected | OSError):
            raise _unreadable(ENDED_EARLY) from None
        # gunicorn's chunk parser: InvalidChunkSize, ChunkMissingTerminator...
        raise _unreadable(f"its chunked encoding is malformed ({type(exc).__name__})") from None
    if len(raw) > max_bytes:
        raise too_large
    if announced is not None and len(raw) < announced:  # the stream ended early
        raise _unreadable(ENDED_EARLY)
    return raw


ENDED_EARLY = "it ended before its announced length"


def _unreadable(why: str) -> InputError:
    """A body that could not be read whole: 408 when the client's time ran out (its socket was
    shut, which is also why the read failed), else 400 saying why."""
    if read_deadline_passed(request.environ):
        return RequestTimeout("the request body was not received in time", path="$")
    return InputError(f"the request body cannot be read: {why}", path="$")


def negotiate_language() -> str:
    """The card language: the best match of Accept-Language, else the configured default."""
    default = engine().settings.default_language
    return request.accept_languages.best_match(SUPPORTED_LANGUAGES, default=default) or default
