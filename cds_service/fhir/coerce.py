"""Reading raw FHIR R4 JSON leniently, and deciding whether a resource is readable.

Real clients deviate from R4 in small ways (a single object where R4 wants an array, as the CDS
Hooks Sandbox sends MedicationRequest.category). The record reads the raw JSON through
`items()`, and asks `validation_problem()`, which validates with the ``fhir.resources.R4B``
models after the same coercion, whether a resource it would rely on is valid R4.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from pydantic import ValidationError

from cds_service.memo import ContentMemo

# The resource types the record validates, by resourceType.
MODELS = {
    "Patient": Patient,
    "Condition": Condition,
    "Observation": Observation,
    "MedicationRequest": MedicationRequest,
    "Procedure": Procedure,
}


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date / dateTime / instant, or an RFC 3339 date-time, as an aware UTC datetime
    (a partial date -> its start; no zone -> UTC); None when it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=UTC)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def items(value: Any) -> list[Any]:
    """A FHIR array as sent; a single object where R4 wants an array (as some clients send,
    e.g. the CDS Hooks Sandbox's MedicationRequest.category) as a one-item array; otherwise
    empty (malformed input is then reported by validation, never a crash)."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, Mapping) else []


def _first_error(exc: ValidationError) -> tuple[str, tuple[Any, ...]]:
    err = exc.errors()[0]
    return err["msg"], tuple(err["loc"])


def _wrap_in_list(resource: Any, loc: tuple[Any, ...]) -> Any:
    """A copy of `resource` with the value at `loc` wrapped in a one-item array."""
    if not loc:
        return [resource]
    head, rest = loc[0], loc[1:]
    if isinstance(resource, Mapping) and isinstance(head, str) and head in resource:
        return {**resource, head: _wrap_in_list(resource[head], rest)}
    if isinstance(resource, list) and isinstance(head, int) and 0 <= head < len(resource):
        copy = list(resource)
        copy[head] = _wrap_in_list(resource[head], rest)
        return copy
    return resource


# How many deviations a resource may need coerced before it counts as unreadable.
MAX_COERCIONS = 8


def validation_problem(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """None when `resource` is valid R4 once the deviations real clients send are coerced (a
    single object or value where R4 wants an array); else (field path, message) of the first
    problem that coercion cannot fix. Coercion only decides readability: the raw JSON is read
    through `items()`, which applies the same leniency. Validating costs 100-250 µs a resource:
    the same content is validated once per process (cds_service/memo.py)."""
    return _VALIDATED(resource)


def _validation_problem(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    model = MODELS[resource["resourceType"]]
    data: Any = resource
    first: tuple[str, tuple[Any, ...]] | None = None
    for _ in range(MAX_COERCIONS):
        try:
            model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
            if first is None:
                first = _first_error(exc)
            wrappable = [
                e for e in errors if e["type"] == "list_type" and not isinstance(e["input"], list)
            ]
            if not wrappable:
                msg, loc = _first_error(exc)
                return _loc_path(loc), msg
            for err in wrappable:
                data = _wrap_in_list(data, tuple(err["loc"]))
            continue
        return None
    assert first is not None
    return _loc_path(first[1]), first[0]


def _loc_path(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


# The answers of the last VALIDATED_MAX resources validated (a few charts' worth).
VALIDATED_MAX = 4096
_VALIDATED: ContentMemo[tuple[str, str] | None] = ContentMemo(VALIDATED_MAX, _validation_problem)
