"""Errors that reach the caller, independent of the web framework.

Every layer raises `InputError` (or a subclass) with the JSON path at fault; the HTTP layer
turns it into a status code and an OperationOutcome body. Nothing here imports Flask.
"""

from __future__ import annotations

from typing import Any


def outcome_body(code: str, message: str, path: str | None) -> dict[str, Any]:
    """A FHIR OperationOutcome with one error issue naming the JSON path at fault."""
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": message}
    if path:
        issue["expression"] = [path]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class InputError(Exception):
    """The request cannot be processed as sent.

    `status` is the HTTP status, `code` the FHIR OperationOutcome issue type, `path` the JSON
    path at fault (e.g. ``prefetch.observations.entry[3].resource.status``), or None.
    """

    status = 400
    code = "invalid"

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class NotFound(InputError):
    status = 404
    code = "not-found"


class UnsupportedMediaType(InputError):
    status = 415
    code = "not-supported"


class PayloadTooLarge(InputError):
    status = 413
    code = "too-long"


class RequestTimeout(InputError):
    """The client did not send its request within CDS_CLIENT_TIMEOUT_SECONDS."""

    status = 408
    code = "timeout"


class PrefetchUnavailable(InputError):
    """Required FHIR data was neither prefetched nor obtainable (CDS Hooks: 412)."""

    status = 412
    code = "processing"

    def __init__(self, keys: list[str], reason: str, unsent: str | None = None) -> None:
        self.keys = keys
        # Why no query was sent for these keys ("no_server", "refused_server"); None when
        # queries were sent and failed (the fetcher reported each one).
        self.unsent = unsent
        names = ", ".join(keys)
        super().__init__(
            f"Cannot evaluate: prefetch key(s) {names} {reason}.",
            path=", ".join(f"prefetch.{k}" for k in keys),
        )


class StoreUnavailable(InputError):
    """The store (database) did not answer in time or failed: what needs it (feedback, its
    summary) is refused with 503 and ``Retry-After``; hook calls go on without it."""

    status = 503
    code = "transient"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, round(retry_after))
        super().__init__(
            f"the store is unavailable; nothing was stored, retry in {self.retry_after} s"
        )
