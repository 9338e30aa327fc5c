"""Prefetch: templates, and what the request actually carried for each key.

For each key a service declares, the request may carry (CDS Hooks 2.0, "Prefetch Template"):
- a resource or a Bundle            -> PRESENT: use it;
- ``null``                          -> NULL: the EHR has no data (not an error);
- a Bundle with no entries          -> EMPTY: no data (not an error);
- an OperationOutcome               -> OUTCOME: the EHR failed to prefetch;
- nothing (key absent)              -> MISSING: the EHR did not prefetch.
OUTCOME and MISSING keys must be fetched from ``fhirServer``; until the service can do so they
are reported as unavailable (HTTP 412, as the spec requires).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cds_service.errors import InputError, PrefetchUnavailable
from cds_service.fhir.record import Located

_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z][A-Za-z0-9]*)\s*\}\}")


class KeyStatus(Enum):
    PRESENT = "present"
    NULL = "null"
    EMPTY = "empty"
    OUTCOME = "operation-outcome"
    MISSING = "missing"


@dataclass(frozen=True)
class Prefetched:
    """Resources usable by the record builder, and how each key was satisfied."""

    resources: tuple[Located, ...]
    status: Mapping[str, KeyStatus]


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """Replace ``{{context.x}}`` tokens with the (simple) values of the hook context."""

    def value(match: re.Match[str]) -> str:
        field = match.group(1)
        item = context.get(field)
        if not isinstance(item, str):
            raise InputError(f"prefetch token needs context.{field}", path=f"context.{field}")
        return item

    return _TOKEN.sub(value, template)


def _entries(bundle: Mapping[str, Any], path: str) -> Iterator[Located]:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise InputError("Bundle.entry must be an array", path=f"{path}.entry")
    for i, entry in enumerate(entries):
        at = f"{path}.entry[{i}]"
        if not isinstance(entry, Mapping):
            raise InputError("Bundle entry must be an object", path=at)
        resource = entry.get("resource")
        if resource is None:
            continue  # e.g. a deleted entry in a history bundle: nothing to read
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            raise InputError("entry.resource must be a FHIR resource", path=f"{at}.resource")
        if resource["resourceType"] == "OperationOutcome":
            continue  # search-mode "outcome" entries carry warnings, not data
        yield Located(f"{at}.resource", resource)


def resolve(keys: list[str], prefetch: Mapping[str, Any] | None) -> Prefetched:
    """Sort the request's prefetch into usable resources and key statuses; raise 412 when
    any declared key is missing or carries an OperationOutcome."""
    prefetch = prefetch or {}
    resources: list[Located] = []
    status: dict[str, KeyStatus] = {}
    for key in keys:
        path = f"prefetch.{key}"
        if key not in prefetch:
            status[key] = KeyStatus.MISSING
            continue
        value = prefetch[key]
        if value is None:
            status[key] = KeyStatus.NULL
            continue
        if not isinstance(value, Mapping) or not isinstance(value.get("resourceType"), str):
            raise InputError("prefetch value must be a FHIR resource, a Bundle or null", path=path)
        kind = value["resourceType"]
        if kind == "OperationOutcome":
            status[key] = KeyStatus.OUTCOME
        elif kind == "Bundle":
            found = list(_entries(value, path))
            status[key] = KeyStatus.PRESENT if found else KeyStatus.EMPTY
            resources.extend(found)
        else:
            status[key] = KeyStatus.PRESENT
            resources.append(Located(path, value))
    unavailable = [k for k, s in status.items() if s in (KeyStatus.MISSING, KeyStatus.OUTCOME)]
    if unavailable:
        raise PrefetchUnavailable(
            unavailable,
            "were not prefetched (absent or an OperationOutcome), and this version of the "
            "service does not query the FHIR server itself",
        )
    return Prefetched(tuple(resources), status)
