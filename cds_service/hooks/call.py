"""A CDS Hooks call, checked against the protocol and read into a typed value.

Everything the spec makes mandatory is checked here (the request schema, the hook the service
answers, the hook's context schema); a call that breaks it is an InputError naming the JSON
path. What the call carries as FHIR data (prefetch, draft orders) is left as sent: the fhir
layer reads it leniently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_service.errors import InputError
from cds_service.hooks import ORDER_HOOKS
from cds_service.hooks.validation import first_violation


@dataclass(frozen=True)
class DraftOrder:
    """A draft order under review, with the JSON path it was sent at."""

    path: str
    resource: Mapping[str, Any]


@dataclass(frozen=True)
class HookCall:
    hook: str
    hook_instance: str
    patient_id: str
    encounter_id: str  # "" when the context names none
    # The orders under review: at order-select only those named in `selections`; None at
    # patient-view.
    drafts: tuple[DraftOrder, ...] | None
    body: Mapping[str, Any]  # as sent: prefetch, fhirServer, fhirAuthorization


def require(schema: str, instance: Any, at: str = "") -> None:
    """Raise an InputError naming the first place where `instance` breaks `schema`."""
    violation = first_violation(schema, instance, at=at)
    if violation is not None:
        raise InputError(violation.message, path=violation.path)


def parse_call(body: Mapping[str, Any], service_id: str, hook: str) -> HookCall:
    """The call `body` made to the service `service_id`, which answers `hook`."""
    require("request", body)
    if body["hook"] != hook:
        raise InputError(f"service {service_id} answers the {hook!r} hook only", path="hook")
    context = body["context"]
    require(f"context-{hook}", context, at="context")
    return HookCall(
        hook=hook,
        hook_instance=body["hookInstance"],
        patient_id=context["patientId"],
        encounter_id=str(context.get("encounterId", "")),
        drafts=draft_orders(context) if hook in ORDER_HOOKS else None,
        body=body,
    )


def draft_orders(context: Mapping[str, Any]) -> tuple[DraftOrder, ...]:
    """The draft orders under review: at order-select only those named in `selections`."""
    selected = context.get("selections")
    entries = context["draftOrders"].get("entry")
    drafts = []
    for i, entry in enumerate(entries if isinstance(entries, list) else ()):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            raise InputError(
                "draftOrders entry must hold a FHIR resource",
                path=f"context.draftOrders.entry[{i}].resource",
            )
        reference = f"{resource['resourceType']}/{resource.get('id')}"
        if selected is None or reference in selected:
            drafts.append(DraftOrder(f"context.draftOrders.entry[{i}].resource", resource))
    return tuple(drafts)
