"""Build a CDS Hooks request from plain FHIR resources (command line and preview page).

A developer has a patient's resources (a Bundle, a folder of JSON files) rather than a CDS
Hooks request. This module turns them into the request an EHR would send to a given service:
each prefetch key receives the resources its template asks for (the Patient for
``Patient/{{context.patientId}}``, a searchset Bundle of the matching type and status for a
search); for the order hooks, draft MedicationRequests become ``context.draftOrders`` (all
selected at order-select). Or, with ``fhir_server``, no prefetch at all: the service fetches
what it needs from that server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from cds_service.hooks import ORDER_HOOKS
from cds_service.hooks.services import ServiceDefinition

DEFAULT_USER = "Practitioner/example-clinician"


class RequestBuildError(ValueError):
    """The resources cannot make a request; the message says what to supply."""


def resources_of(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a JSON document: a resource, or every entry of a Bundle (nested
    Bundles of type searchset/collection included, as a prefetch export would have them)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("resourceType"), str):
        raise RequestBuildError("expected a FHIR resource or Bundle (no resourceType)")
    if document["resourceType"] != "Bundle":
        return [dict(document)]
    entries = document.get("entry") or []
    if not isinstance(entries, list):
        raise RequestBuildError("Bundle.entry has the wrong type: expected an array")
    found: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            raise RequestBuildError(f"Bundle.entry[{index}] has no resource")
        found += resources_of(resource)
    return found


def _patient_id(resources: list[dict[str, Any]], patient_id: str | None) -> str:
    if patient_id:
        return patient_id
    ids = sorted({str(r.get("id")) for r in resources if r.get("resourceType") == "Patient"})
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise RequestBuildError("no Patient resource: add one, or give the patient id")
    raise RequestBuildError(f"{len(ids)} Patient resources: say which patient id to use")


def _belongs_to(resource: Mapping[str, Any], patient_id: str) -> bool:
    if resource.get("resourceType") == "Patient":
        return resource.get("id") == patient_id
    for field_name in ("subject", "patient"):
        ref = resource.get(field_name)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            return ref["reference"].rsplit("/", 1)[-1] == patient_id
    return True  # no subject: let the service judge it


def _matches(resource: Mapping[str, Any], query: Mapping[str, list[str]]) -> bool:
    """The search parameters a developer's files must honour to look like a server answer:
    `status` (the others, e.g. code, are screened by the service itself)."""
    statuses = {s for value in query.get("status", []) for s in value.split(",")}
    status = resource.get("status")
    # A malformed status is passed on: the service says precisely what is wrong with it.
    return not statuses or not isinstance(status, str) or status in statuses


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{r['resourceType']}/{r.get('id', index)}", "resource": r}
            for index, r in enumerate(resources)
        ],
    }


def build_request(
    service: ServiceDefinition,
    resources: Iterable[Mapping[str, Any]],
    *,
    patient_id: str | None = None,
    user_id: str = DEFAULT_USER,
    fhir_server: str | None = None,
    fhir_authorization: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The CDS Hooks request `service` would receive for these resources."""
    pool = [dict(r) for r in resources]
    patient = _patient_id(pool, patient_id)
    pool = [r for r in pool if _belongs_to(r, patient)]
    drafts: list[dict[str, Any]] = []
    if service.hook in ORDER_HOOKS:
        drafts = [
            r
            for r in pool
            if r.get("resourceType") == "MedicationRequest" and r.get("status") == "draft"
        ]
        if not drafts:
            raise RequestBuildError(
                f"{service.hook} needs at least one MedicationRequest with status 'draft' "
                "(the order being selected or signed)"
            )
        chosen = {id(r) for r in drafts}
        pool = [r for r in pool if id(r) not in chosen]

    context: dict[str, Any] = {"userId": user_id, "patientId": patient}
    if drafts:
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in drafts],
        }
        if service.hook == "order-select":
            context["selections"] = [f"MedicationRequest/{r.get('id')}" for r in drafts]
    request: dict[str, Any] = {
        "hook": service.hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
    }
    if fhir_server:
        request["fhirServer"] = fhir_server
        if fhir_authorization:
            request["fhirAuthorization"] = dict(fhir_authorization)
        return request

    prefetch: dict[str, Any] = {}
    for key, template in service.prefetch.items():
        path, _, query_text = template.partition("?")
        resource_type = path.split("/", 1)[0]
        if not query_text:  # a read, e.g. Patient/{{context.patientId}}
            prefetch[key] = next((r for r in pool if r.get("resourceType") == resource_type), None)
            continue
        query = parse_qs(query_text)
        prefetch[key] = _searchset(
            [r for r in pool if r.get("resourceType") == resource_type and _matches(r, query)]
        )
    request["prefetch"] = prefetch
    return request
