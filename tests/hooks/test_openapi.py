"""The OpenAPI document (cds_service/hooks/openapi.yaml) is valid OpenAPI 3.1, describes exactly
the routes the app serves, and its 200 schemas accept what the service really answers."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from cds_service.hooks.validation import schema_names
from tests.conftest import SERVICES, fixture_names, load_request
from tests.openapi_doc import (
    DOCUMENT,
    EMBEDDED,
    METHODS,
    documented_response,
    documented_statuses,
    embedded_schemas,
    operations,
    resolve,
    response_schema_ref,
    schema_errors,
    unserved_paths,
)

# Served by the route that publishes this document; tolerated as not served yet while that
# route is being added (once the app serves it, it is compared like every other path).
SELF_PATH = "/openapi.json"


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT, cls=OpenAPIV31SpecValidator)


def test_a_broken_document_is_rejected() -> None:
    """The validator really checks: a document missing `info` fails."""
    broken = copy.deepcopy(DOCUMENT)
    del broken["info"]
    with pytest.raises(Exception, match="info"):
        validate(broken, cls=OpenAPIV31SpecValidator)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_ref_resolves_inside_the_document() -> None:
    refs = set(_refs(DOCUMENT))
    assert refs
    for ref in sorted(refs):
        assert ref.startswith("#/"), f"{ref}: external reference"
        resolve(ref)  # KeyError names a dangling reference


def test_embedded_schemas_are_the_schema_files() -> None:
    """components/schemas carries the JSON Schemas of hooks/schemas/ unchanged (refs aside)."""
    assert set(EMBEDDED) == set(schema_names())
    components = DOCUMENT["components"]["schemas"]
    for name, schema in embedded_schemas().items():
        assert components.get(name) == schema, (
            f"components/schemas/{name} differs from its schema file; "
            "paste the output of `python -m tests.openapi_doc`"
        )


def _served(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path template, METHOD) for every Flask route but static (HEAD comes with GET)."""
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        template = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            if method != "HEAD":
                served.add((template, method))
    return served


def test_document_lists_exactly_the_flask_routes(app: Flask) -> None:
    served = _served(app)
    documented = set(operations())
    assert served - documented == set(), "routes the document does not describe"
    unserved = documented - served
    assert {path for path, _method in unserved} <= {SELF_PATH}, "documented but not served"
    assert unserved_paths(app) <= {SELF_PATH}
    # The same comparison ignoring OPTIONS (which Flask answers on every route).
    assert {r for r in served if r[1] != "OPTIONS"} <= {r for r in documented if r[1] != "OPTIONS"}
    for (path, method), operation in operations().items():
        assert method.lower() in METHODS
        if "{service_id}" in path:
            params = [
                resolve(p["$ref"]) if "$ref" in p else p
                for p in DOCUMENT["paths"][path]["parameters"]
            ]
            assert params[0]["schema"]["enum"] == list(SERVICES.values())
        assert operation["responses"], (path, method)


def test_documented_statuses() -> None:
    service = "/cds-services/calcinosis-order-sign"
    assert documented_statuses(service, "POST") == {200, 400, 401, 404, 408, 412, 413, 415}
    assert documented_statuses(service + "/feedback", "POST") == {
        200,
        400,
        401,
        404,
        408,
        413,
        415,
        503,
    }
    assert documented_statuses(service + "/feedback/summary", "HEAD") == {200, 401, 404, 503}
    assert documented_statuses("/healthz", "GET") == {200, 503}
    assert documented_statuses("/readyz", "GET") == {200, 503}
    assert documented_statuses("/livez", "GET") == {200}
    assert documented_statuses("/version", "GET") == {200}
    assert documented_statuses("/version", "OPTIONS") == {200, 204}
    assert documented_statuses("/healthz", "OPTIONS") == {200, 204}
    assert documented_statuses("/cds-services", "DELETE") == {405}
    assert documented_statuses("/nowhere", "GET") == {404}


# ----------------------------------------------------------------------------- real answers


def _check(path: str, method: str, response: Any) -> dict[str, Any]:
    assert response.status_code in documented_statuses(path, method)
    ref = response_schema_ref(path, method, response.status_code)
    assert ref, (path, method, response.status_code)
    body = response.get_json()
    problems = schema_errors(ref, body)
    assert not problems, problems
    return body


# A sample: the first, a middle and the last fixture of every folder, in both languages.
SAMPLE = [
    (hook, name, lang)
    for hook in SERVICES
    for name in sorted({fixture_names(hook)[i] for i in (0, len(fixture_names(hook)) // 2, -1)})
    for lang in ("en", "fr")
]


@pytest.mark.parametrize(("hook", "name", "lang"), SAMPLE)
def test_fixture_responses_match_the_documented_200_schema(
    client: FlaskClient, hook: str, name: str, lang: str
) -> None:
    path = f"/cds-services/{SERVICES[hook]}"
    body = load_request(name, hook)
    response = client.post(path, json=body, headers={"Accept-Language": lang})
    assert response.status_code == 200, response.get_json()
    assert response.headers["Content-Language"] == lang
    _check(path, "POST", response)
    # The document's request schema accepts the fixture too.
    assert not schema_errors("#/components/schemas/ServiceRequest", body)


def test_every_fixture_request_matches_the_documented_request_schema() -> None:
    for hook in SERVICES:
        for name in fixture_names(hook):
            problems = schema_errors(
                "#/components/schemas/ServiceRequest", load_request(name, hook)
            )
            assert not problems, (hook, name, problems)


def test_request_schema_checks_the_context_of_its_hook() -> None:
    body = load_request(fixture_names("order-sign")[0], "order-sign")
    del body["context"]["draftOrders"]
    assert schema_errors("#/components/schemas/ServiceRequest", body)


def test_discovery_health_feedback_and_summary_match_their_schemas(client: FlaskClient) -> None:
    _check("/cds-services", "GET", client.get("/cds-services"))
    assert _check("/version", "GET", client.get("/version"))["service"] == "calcinosis-cds"
    health = _check("/healthz", "GET", client.get("/healthz"))
    assert health["status"] == "ok"

    path = "/cds-services/calcinosis-patient-view"
    cards = client.post(path, json=load_request("02-aluminium-egfr-22")).get_json()["cards"]
    card = next(c for c in cards if c.get("overrideReasons"))
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": card["overrideReasons"][0]},
                "outcomeTimestamp": "2026-11-23T12:00:00Z",
            }
        ]
    }
    assert not schema_errors("#/components/schemas/Feedback", feedback)
    stored = _check(path + "/feedback", "POST", client.post(path + "/feedback", json=feedback))
    assert stored == {"stored": 1}
    summary = _check(path + "/feedback/summary", "GET", client.get(path + "/feedback/summary"))
    assert any(r["overridden"] == 1 and r["overrideReasons"] for r in summary["rules"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/cds-services/nope", {"json": {}}, 404),
        (
            "POST",
            "/cds-services/calcinosis-patient-view",
            {"data": "{", "content_type": "application/json"},
            400,
        ),
        (
            "POST",
            "/cds-services/calcinosis-patient-view",
            {"data": "{}", "content_type": "text/plain"},
            415,
        ),
        ("POST", "/cds-services/calcinosis-order-sign/feedback", {"json": {"feedback": []}}, 400),
        ("GET", "/cds-services/nope/feedback/summary", {}, 404),
    ],
    ids=["unknown-service", "bad-json", "media-type", "feedback-empty", "summary-unknown"],
)
def test_errors_match_the_documented_operation_outcome(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = client.open(path, method=method, **kwargs)
    assert response.status_code == status
    _check(path, method, response)


def test_prefetch_unavailable_is_a_documented_412(client: FlaskClient) -> None:
    path = "/cds-services/calcinosis-patient-view"
    body = load_request("02-aluminium-egfr-22")
    del body["prefetch"]["observations"]
    body["hookInstance"] = str(uuid.uuid4())
    outcome = _check(path, "POST", client.post(path, json=body))
    assert outcome["issue"][0]["expression"] == ["prefetch.observations"]


def test_preflight_is_documented(client: FlaskClient) -> None:
    for path in ("/cds-services", "/cds-services/calcinosis-order-select", "/healthz"):
        response = client.options(path, headers={"Origin": "https://sandbox.cds-hooks.org"})
        assert response.status_code in documented_statuses(path, "OPTIONS")
        assert response.status_code == 204
        assert response.get_data() == b""


def test_the_served_document_is_this_one(app: Flask, client: FlaskClient) -> None:
    """GET /openapi.json serves openapi.yaml as JSON (once the route is there), with the
    version of the package that serves it."""
    if SELF_PATH in unserved_paths(app):
        pytest.skip(f"{SELF_PATH} is not served yet")
    response = client.get(SELF_PATH)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = response.get_json()
    assert served["info"].pop("version") == metadata.version("calcinosis-cds")
    expected = copy.deepcopy(DOCUMENT)
    del expected["info"]["version"]
    assert served == expected


def test_the_request_id_header_is_documented_where_clients_read_it() -> None:
    header = {"$ref": "#/components/headers/XRequestID"}
    service = "/cds-services/calcinosis-order-sign"
    for path, status in ((service, 200), (service, 400), (service, 412), (service, 413)):
        response = documented_response(path, "POST", status)
        assert response["headers"]["X-Request-ID"] == header, (path, status)
    assert {"$ref": "#/components/parameters/XRequestID"} in operations()[
        ("/cds-services/{service_id}", "POST")
    ]["parameters"]
