"""Prefetch: templates, and what the request actually carried for each key.

For each key a service declares, the request may carry (CDS Hooks 2.0, "Prefetch Template"):
- a resource or a Bundle            -> PRESENT: use it;
- ``null``                          -> NULL: the EHR has no data (not an error);
- a Bundle with no entries          -> EMPTY: no data (not an error);
- an OperationOutcome               -> OUTCOME: the EHR failed to prefetch;
- nothing (key absent)              -> MISSING: the EHR did not prefetch.
OUTCOME and MISSING keys are fetched from ``fhirServer`` (the same template, rendered with the
hook context), with ``fhirAuthorization.access_token`` as bearer token, provided that server is
one this service is configured to query. A key that can be neither read nor fetched makes the
call fail with 412 naming the keys, as the spec requires.

Then, within the same deadline and byte budget, what the prefetch points to but does not hold:
the pages behind a prefetched searchset's ``next`` link, and the Medications that orders
reference but that are neither contained nor included (``_include=MedicationRequest:medication``),
fetched by id. What cannot be fetched does not fail the call: an order then falls back on its
reference's display text, and a search with pages left unread becomes an "incomplete" note
shown on the cards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cds_service.errors import InputError, PrefetchUnavailable
from cds_service.fhir.client import FetchBudget, FhirFetcher, next_link
from cds_service.fhir.facts import NOT_ALLOWED, DataNote, Located
from cds_service.fhir.record import medication_reference
from cds_service.urls import is_allowed

_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z][A-Za-z0-9]*)\s*\}\}")


class KeyStatus(Enum):
    """How the request carried a prefetch key (the cases above)."""

    PRESENT = "present"
    NULL = "null"
    EMPTY = "empty"
    OUTCOME = "operation-outcome"
    MISSING = "missing"


# At most this many referenced Medications are fetched for one call (one query each).
MAX_MEDICATION_FETCHES = 40


@dataclass(frozen=True)
class Prefetched:
    """Resources usable by the record builder, and notes about searches whose pages could
    not all be read."""

    resources: tuple[Located, ...]
    notes: tuple[DataNote, ...] = ()


@dataclass(frozen=True)
class FetchPolicy:
    """Whether and how missing prefetch may be fetched from the EHR's FHIR server."""

    fetcher: FhirFetcher | None = None
    allowed_servers: tuple[str, ...] = field(default=())
    require_https: bool = False  # production: never send a token over plain http

    def permits(self, server: str) -> bool:
        """True when `server` is one of the allowed FHIR base URLs or below one
        (`cds_service.urls.is_allowed`)."""
        if self.require_https and not server.startswith("https://"):
            return False
        return is_allowed(server, self.allowed_servers)


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
        if not isinstance(entry, Mapping):
            raise InputError("Bundle entry must be an object", path=f"{path}.entry[{i}]")
        resource = entry.get("resource")
        if resource is None:
            continue  # e.g. a deleted entry in a history bundle: nothing to read
        at = f"{path}.entry[{i}].resource"  # built once per entry: a prefetch may hold thousands
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            raise InputError("entry.resource must be a FHIR resource", path=at)
        if resource["resourceType"] == "OperationOutcome":
            continue  # search-mode "outcome" entries carry warnings, not data
        yield Located(at, resource)


def resolve(
    templates: Mapping[str, str], request: Mapping[str, Any], policy: FetchPolicy
) -> Prefetched:
    """Sort the request's prefetch into usable resources; fetch what is missing when allowed;
    raise 412 for keys that can be neither read nor fetched."""
    prefetch = request.get("prefetch") or {}
    resources: list[Located] = []
    status: dict[str, KeyStatus] = {}
    pages: dict[str, str] = {}  # key -> the next link of its prefetched searchset
    # One deadline and one byte budget for every fetch of this call.
    deadline = policy.fetcher.deadline() if policy.fetcher is not None else None
    budget = policy.fetcher.budget() if policy.fetcher is not None else None
    for key in templates:
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
            if (link := next_link(value)) is not None:
                pages[key] = link
        else:
            status[key] = KeyStatus.PRESENT
            resources.append(Located(path, value))
    missing = [k for k, s in status.items() if s in (KeyStatus.MISSING, KeyStatus.OUTCOME)]
    notes: list[DataNote] = []
    if missing:
        fetched, truncated = _fetch(missing, templates, request, policy, deadline, budget)
        for found in fetched.values():
            resources.extend(found)
        notes += [_incomplete(key, "page limit reached") for key in truncated]
    notes += _follow_up(pages, resources, request, policy, deadline, budget)
    return Prefetched(tuple(resources), tuple(notes))


def _incomplete(key: str, reason: str = "") -> DataNote:
    return DataNote(kind="incomplete", concept="", ref="", detail=key, reason=reason)


def _unresolved_medications(
    resources: list[Located], request: Mapping[str, Any], tried: set[str]
) -> list[str]:
    """`Medication/{id}` references of the orders (prefetched and draft) that no Medication of
    the data answers, and that were not already asked for."""
    held = {
        f"Medication/{r.resource['id']}"
        for r in resources
        if r.resource.get("resourceType") == "Medication" and isinstance(r.resource.get("id"), str)
    }
    context = request.get("context")
    drafts = context.get("draftOrders") if isinstance(context, Mapping) else None
    entries = drafts.get("entry") if isinstance(drafts, Mapping) else None
    orders = [r.resource for r in resources] + [
        e["resource"]
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)
    ]
    wanted: dict[str, None] = {}
    for order in orders:
        if order.get("resourceType") != "MedicationRequest":
            continue
        ref = medication_reference(order)
        if ref is not None and ref not in held and ref not in tried:
            wanted[ref] = None
    return list(wanted)[:MAX_MEDICATION_FETCHES]


def _follow_up(
    pages: dict[str, str],
    resources: list[Located],
    request: Mapping[str, Any],
    policy: FetchPolicy,
    deadline: float | None,
    budget: FetchBudget | None,
) -> list[DataNote]:
    """Fetch the next pages of prefetched searches and the referenced Medications (adding
    them to `resources`); return notes for the searches left incomplete."""
    server = request.get("fhirServer")
    usable = isinstance(server, str) and policy.fetcher is not None and policy.permits(server)
    tried: set[str] = set()
    notes: list[DataNote] = []
    for _round in range(2):  # pages and Medications, then the Medications the pages named
        references = _unresolved_medications(resources, request, tried)
        if not pages and not references:
            break
        if not usable or policy.fetcher is None or not isinstance(server, str):
            reason = "" if not isinstance(server, str) else NOT_ALLOWED
            notes += [_incomplete(key, reason) for key in pages]
            break
        tried.update(references)
        queries = {f"{key}#next": url for key, url in pages.items()}
        queries |= {f"medication#{i}": ref for i, ref in enumerate(references)}
        result = policy.fetcher.fetch(server, _token(request), queries, deadline, budget)
        for name, found in result.resources.items():
            resources.extend(
                Located(f"fetched.{name}.entry[{i}].resource", resource)
                for i, resource in enumerate(found)
            )
        notes += [_incomplete(n.split("#")[0], "page limit reached") for n in result.truncated]
        notes += [
            _incomplete(name.split("#")[0], reason)
            for name, reason in result.failures.items()
            if name.endswith("#next")  # an unfetched Medication falls back on its display
        ]
        pages = {}
    return notes


def _token(request: Mapping[str, Any]) -> str | None:
    auth = request.get("fhirAuthorization") or {}
    token = auth.get("access_token") if isinstance(auth, Mapping) else None
    return token if isinstance(token, str) else None


def _fetch(
    keys: list[str],
    templates: Mapping[str, str],
    request: Mapping[str, Any],
    policy: FetchPolicy,
    deadline: float | None,
    budget: FetchBudget | None,
) -> tuple[dict[str, list[Located]], tuple[str, ...]]:
    server = request.get("fhirServer")
    if not isinstance(server, str):
        raise PrefetchUnavailable(
            keys,
            "were not prefetched, and the request names no fhirServer to fetch them from",
            unsent="no_server",
        )
    if policy.fetcher is None or not policy.permits(server):
        raise PrefetchUnavailable(
            keys,
            "were not prefetched, and fhirServer is not a FHIR server this service is "
            "configured to query (CDS_FHIR_SERVERS)",
            unsent="refused_server",
        )
    context = request.get("context") or {}
    queries = {key: render_template(templates[key], context) for key in keys}
    result = policy.fetcher.fetch(server, _token(request), queries, deadline, budget)
    if result.failures:
        details = ", ".join(f"{k} ({reason})" for k, reason in result.failures.items())
        raise PrefetchUnavailable(
            list(result.failures), f"were not prefetched and could not be fetched: {details}"
        )
    located = {
        key: [
            Located(f"fetched.{key}.entry[{i}].resource", resource)
            for i, resource in enumerate(found)
        ]
        for key, found in result.resources.items()
    }
    return located, tuple(result.truncated)
