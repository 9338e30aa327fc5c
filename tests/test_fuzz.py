"""Property-based fuzzing of the HTTP API (hypothesis, Flask test client, no network).

Generated requests across discovery, the three services, unknown service ids, feedback, the
preview page and the other routes: random JSON, mutations of the fixture requests (fields dropped,
replaced, retyped at random paths, wrong hooks, huge strings, deep nesting, unicode, raw number
literals such as 1e308 / NaN), random content types, raw bytes and random methods. For every
answer:

- the status is never 5xx, and is one the OpenAPI document lists for that path and method;
- the body is JSON when the document gives the response a body, and empty when it gives none
  (204 and 200 preflights, 401) and for HEAD;
- a 200 body (cards above all) validates against the documented schema;
- it carries a plain X-Request-ID: the one sent if that was plain, else a new one.

How long each property searches is set by the Hypothesis profile (tests/conftest.py): `ci`,
what `make test` runs, is deterministic and short; `fuzz` (`make fuzz`) searches ten times
longer from a new seed each run. Whatever the profile, every route the app serves receives a
request (ROUTE_PATHS, checked by test_every_route_is_fuzzed). The bugs this fuzzing found have
regression tests at the end.
"""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, assume, example, find, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import MapAdapter, RequestRedirect
from werkzeug.test import TestResponse

import cds_service
import fixtures
from cds_service.app import create_app
from tests.conftest import SERVICES, fixture_names, load_request, make_settings
from tests.openapi_doc import (
    documented_response,
    documented_statuses,
    schema_errors,
    unserved_paths,
)

# Hypothesis mixes constants found in the loaded modules of the project (tests excluded) into
# what it generates, so the examples would depend on which other test modules the session
# imported. Loading all of them here keeps the run the same alone or in the whole suite.
for _package in (cds_service, fixtures):
    for _module in pkgutil.walk_packages(_package.__path__, f"{_package.__name__}."):
        importlib.import_module(_module.name)

# ----------------------------------------------------------------------------- bookkeeping

PLAIN_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
UNSERVED: set[str] = set()  # documented paths the app does not serve yet (e.g. /openapi.json)
STATIC: list[bool] = []  # whether the app has Flask's built-in /static/<filename> route


def fuzz(examples: int, shrink: bool = True) -> settings:
    """`examples` per 100 of the profile's `max_examples` (a quarter of them under `ci`, two and
    a half times under `fuzz`); seed, deadline and database come from the profile.
    `shrink=False` for searches that need no minimal example."""
    return settings(
        max_examples=max(1, examples * settings.default.max_examples // 100),
        phases=list(Phase) if shrink else [Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


SERVICE_IDS = list(SERVICES.values())
HOOKS = list(SERVICES)
JSON = "application/json"
FIXTURES = [
    (hook, name, load_request(name, hook)) for hook in HOOKS for name in fixture_names(hook)
]


# ----------------------------------------------------------------------------- the app


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """One app for the whole module, on its own SQLite file."""
    app = create_app(make_settings(tmp_path_factory.mktemp("fuzz")))
    UNSERVED.update(unserved_paths(app))
    STATIC.append(any(rule.endpoint == "static" for rule in app.url_map.iter_rules()))
    yield app.test_client()
    app.extensions["cds_engine"].close()


class Issued(dict[str, list[dict[str, Any]]]):
    """Cards per service id, with a short repr: hypothesis prints a failing test's arguments,
    and warns (an error under this project's filterwarnings) about a repr this large."""

    def __repr__(self) -> str:
        return f"<issued cards: {', '.join(f'{k}={len(v)}' for k, v in self.items())}>"


@pytest.fixture(scope="module")
def issued(api: FlaskClient) -> Issued:
    """Cards the app really issued, per service id (for feedback that names real cards)."""
    cards = Issued({sid: [] for sid in SERVICE_IDS})
    for hook, _name, body in FIXTURES:
        sid = SERVICES[hook]
        response = send(api, "POST", f"/cds-services/{sid}", json.dumps(body).encode(), JSON)
        cards[sid] += response.get_json()["cards"]
    assert all(cards.values())
    return cards


# ----------------------------------------------------------------------------- the properties


def describe(method: str, path: str, body: bytes | None, ctype: str | None, headers: Any) -> str:
    shown = body if body is None or len(body) <= 600 else body[:600] + b"..."
    size = 0 if body is None else len(body)
    return (
        f"{method} {path} Content-Type={ctype!r} headers={headers!r} body({size} bytes)={shown!r}"
    )


def send(
    client: FlaskClient,
    method: str,
    path: str,
    body: bytes | None = None,
    ctype: str | None = None,
    headers: dict[str, str] | None = None,
) -> TestResponse:
    """Send one request and check every property of its answer."""
    response = client.open(path, method=method, data=body, content_type=ctype, headers=headers)
    routed = response.request.path  # percent-decoded, as Flask routes it
    status = response.status_code
    data = response.get_data()
    where = f"{describe(method, path, body, ctype, headers)} -> {status} {data[:600]!r}"
    assert status < 500, where
    sent_id = (headers or {}).get("X-Request-ID")
    answered_id = response.headers.get("X-Request-ID", "")
    assert PLAIN_REQUEST_ID.fullmatch(answered_id), where
    if sent_id is not None and PLAIN_REQUEST_ID.fullmatch(sent_id):
        assert answered_id == sent_id, where
    if routed.startswith("/static/") and STATIC[-1]:
        # Flask's built-in static route, when the app has one: not part of the API, not
        # documented; it must still answer like an unknown route, never with a file.
        expected = {"GET": 404, "HEAD": 404, "OPTIONS": 200}.get(method.upper(), 405)
        assert status == expected, where
        assert (data == b"") == (method.upper() in ("HEAD", "OPTIONS")), where
        return response
    assert status in documented_statuses(routed, method, UNSERVED), f"undocumented: {where}"
    documented = documented_response(routed, method, status, UNSERVED)
    if method.upper() == "HEAD" or not documented.get("content"):
        assert data == b"", f"body where none is documented: {where}"
        return response
    if JSON not in documented["content"]:  # e.g. the preview page, text/html
        assert response.mimetype in documented["content"], f"undocumented type: {where}"
        return response
    assert response.mimetype == JSON, f"not JSON: {where}"
    try:
        decoded = json.loads(data)
    except ValueError:
        pytest.fail(f"body is not JSON: {where}")
    schema = documented["content"][JSON]["schema"]
    problems = schema_errors(schema["$ref"], decoded) if "$ref" in schema else []
    assert not problems, f"body does not match {schema}: {problems[:3]}; {where}"
    return response


# ----------------------------------------------------------------------------- strategies

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "\t\r\n",
    "\u202e\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "\ufeff",
    "e\u0301\u0327\u0308",
    "😀👩‍⚕️🏳️‍🌈",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "Zoë Łódź Ærø ß ﬁ İı",
    "null",
    "true",
    "0",
    "-0",
    "1e308",
    "NaN",
    "Infinity",
    "Patient/fix-02",
    "Patient/",
    "MedicationRequest/../../x",
    "fix-02",
    "<script>alert(1)</script>",
    "' OR '1'='1' --",
    "%s%n%x{0}{}",
    "{{context.patientId}}",
    "\\",
    '"',
    "http://127.0.0.1:1/fhir",
    "https://ehr.example.org/fhir/",
    "2026-11-23",
    "2026-02-30T25:61:61Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01",
    "x" * 65,
]
# Lone surrogates ("\ud800") reach the body as JSON escapes (they once gave a 500 in feedback:
# see test_feedback_with_lone_surrogate_*).
SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)


def texts(surrogates: bool = True) -> st.SearchStrategy[str]:
    options = [st.sampled_from(NASTY_STRINGS), st.text(max_size=30)]
    if surrogates:
        options.append(SURROGATES)
    return st.one_of(options)


INTEGERS = st.one_of(
    st.integers(-(2**31), 2**31),
    st.sampled_from([0, -1, 2**53 + 1, 10**30, -(10**30)]),
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
KEYS = st.one_of(
    st.sampled_from(
        [
            "hook",
            "hookInstance",
            "context",
            "prefetch",
            "fhirServer",
            "fhirAuthorization",
            "patientId",
            "userId",
            "draftOrders",
            "selections",
            "resourceType",
            "entry",
            "resource",
            "id",
            "feedback",
            "card",
            "outcome",
            "extension",
        ]
    ),
    st.text(max_size=12),
)


def json_values(surrogates: bool = True) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | INTEGERS | FLOATS | texts(surrogates)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4)
        ),
        max_leaves=12,
    )


def request_shaped() -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the request's field names and random, sometimes valid, values."""
    hooks = st.sampled_from([*HOOKS, "medication-prescribe"]) | texts()
    context = st.fixed_dictionaries(
        {},
        optional={
            "userId": st.sampled_from(["Practitioner/1", "Patient/fix-02", "nobody"]) | texts(),
            "patientId": st.sampled_from(["fix-02", "x", "a" * 64, "a" * 65]) | texts(),
            "encounterId": texts(),
            "selections": st.lists(st.sampled_from(["MedicationRequest/1"]) | texts()),
            "draftOrders": json_values()
            | st.just({"resourceType": "Bundle", "entry": [{"resource": {}}]}),
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "hook": hooks,
            "hookInstance": texts(),
            "context": context | json_values(),
            "prefetch": st.dictionaries(
                st.sampled_from(
                    ["patient", "conditions", "observations", "medications", "procedures"]
                )
                | KEYS,
                st.none() | json_values(),
                max_size=4,
            ),
            "fhirServer": st.sampled_from(["http://127.0.0.1:9/fhir", "ftp://x"]) | texts(),
            "fhirAuthorization": json_values(),
        },
    )


METHODS = st.one_of(
    st.sampled_from(
        ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"]
    ),
    st.from_regex(r"[A-Z]{1,10}", fullmatch=True),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            JSON,
            "application/json; charset=utf-8",
            "application/fhir+json",
            "application/cds-hooks+json",
            "APPLICATION/JSON",
            "application/json;;;",
            "+json",
            "text/plain",
            "text/html",
            "application/xml",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "*/*",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
ASCII_HEADER = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Accept-Language": st.sampled_from(["fr", "fr-FR", "en;q=0", "*", "de, fr;q=0.1"])
        | ASCII_HEADER,
        "Origin": st.sampled_from(["https://sandbox.cds-hooks.org", "null"]) | ASCII_HEADER,
        "Authorization": st.just("Bearer abc.def.ghi") | ASCII_HEADER,
        "Access-Control-Request-Method": st.sampled_from(["POST", "GET"]),
        "X-Request-ID": st.sampled_from(["ehr-42", "x" * 128, "x" * 129, "a b", '"'])
        | ASCII_HEADER,
    },
)


# Any one path segment, percent-encoded.
ANY_SEGMENT = st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe=""))
# A path segment for a service id: the three ids, and anything else, percent-encoded (some
# decode to "/" and so to empty path segments, which once got a 308 HTML redirect: see
# test_paths_with_empty_segments_are_not_redirected).
SERVICE_SEGMENTS = st.one_of(
    st.sampled_from(SERVICE_IDS),
    st.sampled_from(["x", "..", ".", "CALCINOSIS-PATIENT-VIEW", "calcinosis-patient-view "]),
    ANY_SEGMENT,
)
PATHS = st.one_of(
    st.just("/cds-services"),
    st.just("/healthz"),
    st.just("/livez"),
    st.just("/version"),
    st.just("/readyz"),
    st.just("/openapi.json"),
    st.just("/metrics"),
    st.sampled_from(["/preview/fixtures", "/preview/requests", "/preview/", "/preview"]),
    st.builds(
        lambda f: f"/preview/static/{f}",
        st.sampled_from(["preview.js", "preview.css", "preview.html", "..%2Froutes.py"])
        | ANY_SEGMENT,
    ),
    st.builds(
        lambda hook, name: f"/preview/fixtures/{hook}/{name}",
        st.sampled_from(HOOKS) | ANY_SEGMENT,
        st.sampled_from([name for _hook, name, _body in FIXTURES]) | ANY_SEGMENT,
    ),
    st.builds(lambda s: f"/cds-services/{s}", SERVICE_SEGMENTS),
    st.builds(lambda s: f"/cds-services/{s}/feedback", SERVICE_SEGMENTS),
    st.builds(lambda s: f"/cds-services/{s}/feedback/summary", SERVICE_SEGMENTS),
    st.sampled_from(["/", "/cds-services/", "/healthz/", "/static/x", "/cds-services/a/b/c/d"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(
        lambda s: "/" + s.lstrip("/")
    ),
)

RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"{",
            b"}",
            b"[]",
            b"null",
            b"NaN",
            b"-Infinity",
            b"1e309",
            b"\xef\xbb\xbf{}",
            b"\xff\xfe{\x00}\x00",
            b'{"hook": "patient-view", "hook": 1}',
            b'{"a": "\\ud800"}',
            b'{"a": "\\u0000"}',
            b'"\\',
            b"[" * 200 + b"]" * 200,
            b"{" * 100_000,
            b"9" * 5000,
        ]
    ),
    json_values().map(lambda v: json.dumps(v).encode()),
)


# One path of every route the app serves: test_random_requests sends each of them, whatever
# the profile, and test_every_route_is_fuzzed fails when a route is missing here.
ROUTE_PATHS = [
    "/",
    "/cds-services",
    *(f"/cds-services/{sid}" for sid in SERVICE_IDS),
    "/cds-services/unknown-service",
    *(f"/cds-services/{sid}/feedback" for sid in SERVICE_IDS),
    *(f"/cds-services/{sid}/feedback/summary" for sid in SERVICE_IDS),
    "/healthz",
    "/livez",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/version",
    "/preview/fixtures",
    "/preview/fixtures/patient-view/01-ssc-calcinosis",
    "/preview/requests",
    "/preview/static/preview.js",
]


def every_route(test: Callable[..., None]) -> Callable[..., None]:
    """Explicit examples for test_random_requests: each of ROUTE_PATHS with GET and POST."""
    for path in reversed(ROUTE_PATHS):  # examples run in the order they are listed
        test = example(methods=("GET", "POST"), path=path, ctype=JSON, body=b"{}", headers={})(test)
    return test


def routed_to(adapter: MapAdapter, path: str) -> str | None:
    """The route (rule text) the app gives a request path, or None when it has none."""
    for method in ("GET", "POST"):
        try:
            rule, _args = adapter.match(unquote(path), method=method, return_rule=True)
        except MethodNotAllowed:
            continue
        except (NotFound, RequestRedirect):
            return None
        return rule.rule
    return None


# ----------------------------------------------------------------------------- mutations


def json_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a JSON document (the root is `()`)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += json_paths(value, (*prefix, i))
    return found


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def put(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`doc` with `value` at `path` (the root replaced when the path is empty)."""
    if not path:
        return value
    at(doc, path[:-1])[path[-1]] = value
    return doc


def drop(doc: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return {}
    parent = at(doc, path[:-1])
    del parent[path[-1]]
    return doc


def retyped(value: Any, choice: int) -> Any:
    """Another JSON type for `value`, keeping its content where it can."""
    variants: list[Any] = [None, True, 0, -1.5, "", [], {}]
    if isinstance(value, str):
        variants += [
            [value],
            {"value": value},
            len(value),
            value.encode("utf-8", "surrogatepass").hex(),
        ]
        if re.fullmatch(r"-?\d+(\.\d+)?", value):
            variants.append(float(value))
    elif isinstance(value, bool | int | float):
        variants += [str(value), [value], {"value": value}]
    elif isinstance(value, list):
        variants += [dict(enumerate(map(str, range(len(value))))), value[:1], json.dumps(value)]
    elif isinstance(value, dict):
        variants += [list(value.values()), list(value), json.dumps(value)]
    return variants[choice % len(variants)]


def nested(depth: int, kind: str, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def unhashable_status(node: Any) -> bool:
    """An Observation or MedicationRequest whose `status` is an array or an object (once a
    500: see test_unhashable_status_is_not_5xx)."""
    if isinstance(node, dict):
        if node.get("resourceType") in ("Observation", "MedicationRequest") and isinstance(
            node.get("status"), list | dict
        ):
            return True
        return any(unhashable_status(value) for value in node.values())
    if isinstance(node, list):
        return any(unhashable_status(value) for value in node)
    return False


RAW_NUMBERS = [
    "1e308",
    "-1e308",
    "1e309",
    "-1e400",
    "1e-400",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "0.0000000000000000000000001",
    "123456789012345678901234567890",
    "9" * 4301,
    "1E+2",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
]
RAW = "\x00raw\x00"  # a placeholder replaced by a raw literal after json.dumps


def encode(doc: Any, raw: list[str] | None = None) -> bytes:
    text = json.dumps(doc)
    for literal in raw or ():
        text = text.replace(json.dumps(RAW), literal, 1)
    return text.encode("utf-8")


GENERIC_MUTATIONS = ("drop", "replace", "retype", "text")


def any_path(draw: st.DrawFn, doc: Any) -> tuple[Any, ...]:
    """A location of `doc`, the root included."""
    paths = json_paths(doc)
    return paths[draw(st.integers(0, len(paths) - 1))]


def mutated(draw: st.DrawFn, doc: Any, path: tuple[Any, ...], op: str, surrogates: bool) -> Any:
    """`doc` after one of the GENERIC_MUTATIONS at `path`."""
    if op == "drop":
        return drop(doc, path)
    if op == "replace":
        return put(doc, path, draw(json_values(surrogates)))
    if op == "retype":
        return put(doc, path, retyped(at(doc, path), draw(st.integers(0, 20))))
    assert op == "text", op
    return put(doc, path, draw(texts(surrogates)))


@st.composite
def mutated_fixture(draw: st.DrawFn, surrogates: bool = True) -> tuple[str, dict[str, Any]]:
    """A fixture request with one to three random mutations; returns (its hook, the body)."""
    hook, _name, original = draw(st.sampled_from(FIXTURES))
    doc: Any = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        path = any_path(draw, doc)
        op = draw(st.sampled_from(["drop", "drop", "replace", "retype", "text", "hook", "special"]))
        if op in GENERIC_MUTATIONS:
            doc = mutated(draw, doc, path, op, surrogates)
        elif op == "hook" and isinstance(doc, dict):
            doc["hook"] = draw(st.sampled_from([*HOOKS, "patient-view ", "", "PATIENT-VIEW"]))
        elif op == "special" and isinstance(doc, dict):
            key = draw(
                st.sampled_from(
                    ["patient", "conditions", "observations", "medications", "procedures"]
                )
            )
            prefetch = doc.setdefault("prefetch", {})
            if isinstance(prefetch, dict):
                prefetch[key] = copy.deepcopy(
                    draw(
                        st.sampled_from(
                            [
                                None,
                                {},
                                {"resourceType": "Bundle"},
                                {"resourceType": "OperationOutcome", "issue": []},
                                {"resourceType": "Patient", "id": "someone-else"},
                                {"resourceType": "Bundle", "entry": [{"resource": None}]},
                            ]
                        )
                    )
                )
            if draw(st.booleans()):  # ask for a fetch from a server the app does not allow
                doc["fhirServer"] = "http://127.0.0.1:9/fhir"
                doc["fhirAuthorization"] = {
                    "access_token": "t",
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "scope": "user/*.read",
                    "subject": "cds",
                }
    return hook, doc


# ----------------------------------------------------------------------------- counted tests


@fuzz(1500)
@every_route
@given(
    methods=st.tuples(METHODS, METHODS),
    path=PATHS,
    ctype=CONTENT_TYPES,
    body=RAW_BODIES,
    headers=HEADERS,
)
def test_random_requests(
    api: FlaskClient,
    methods: tuple[str, str],
    path: str,
    ctype: str,
    body: bytes,
    headers: dict[str, str],
) -> None:
    """Any method, path, content type, headers and bytes (each request with two methods)."""
    for method in methods:
        send(api, method, path, body, ctype or None, headers)


@fuzz(800)
@given(
    value=st.one_of(json_values(), request_shaped()),
    ctype=st.sampled_from([JSON, "application/fhir+json", "application/json; charset=utf-8"]),
    unknown=SERVICE_SEGMENTS.filter(lambda s: s not in SERVICE_IDS),
)
def test_random_json_on_every_post_route(
    api: FlaskClient, value: Any, ctype: str, unknown: str
) -> None:
    """The same random JSON to the three services, an unknown one, their feedback routes and
    the preview page's request builder."""
    body = json.dumps(value).encode()
    for sid in [*SERVICE_IDS, unknown]:
        send(api, "POST", f"/cds-services/{sid}", body, ctype)
    for sid in SERVICE_IDS:
        send(api, "POST", f"/cds-services/{sid}/feedback", body, ctype)
    send(api, "POST", "/preview/requests", body, ctype)


@fuzz(900)
@given(case=mutated_fixture(), other=st.sampled_from(SERVICE_IDS), lang=HEADERS)
def test_fixture_mutations(
    api: FlaskClient, case: tuple[str, Any], other: str, lang: dict[str, str]
) -> None:
    """Fixture requests with fields dropped, replaced or retyped, to their service and another."""
    hook, doc = case
    body = encode(doc)
    send(api, "POST", f"/cds-services/{SERVICES[hook]}", body, JSON, lang)
    send(api, "POST", f"/cds-services/{other}", body, "application/fhir+json")


@fuzz(500)
@given(data=st.data())
def test_raw_number_literals(api: FlaskClient, data: st.DataObject) -> None:
    """Numbers such as 1e308, 1e309, NaN, -0 or 4301 digits written as raw JSON text."""
    hook, _name, original = data.draw(st.sampled_from(FIXTURES))
    doc = copy.deepcopy(original)
    paths = [p for p in json_paths(doc) if p]
    numeric = [p for p in paths if isinstance(at(doc, p), int | float)] or paths
    literals = []
    for _ in range(data.draw(st.integers(1, 3))):
        pool = numeric if data.draw(st.booleans()) else paths
        path = pool[data.draw(st.integers(0, len(pool) - 1))]
        try:
            doc = put(doc, path, RAW)
        except (KeyError, IndexError, TypeError):
            continue  # its parent was replaced by an earlier placeholder
        literals.append(data.draw(st.sampled_from(RAW_NUMBERS)))
    send(api, "POST", f"/cds-services/{SERVICES[hook]}", encode(doc, literals), JSON)


@fuzz(300)
@given(
    data=st.data(),
    depth=st.one_of(st.integers(1, 200), st.sampled_from([63, 64, 65, 66, 199, 200])),
    kind=st.sampled_from(["list", "dict"]),
)
def test_deep_nesting(api: FlaskClient, data: st.DataObject, depth: int, kind: str) -> None:
    """Values nested up to 200 levels at a random place of a fixture, and as the whole body."""
    hook, _name, original = data.draw(st.sampled_from(FIXTURES))
    doc = copy.deepcopy(original)
    paths = json_paths(doc)
    path = paths[data.draw(st.integers(0, len(paths) - 1))]
    leaf = data.draw(st.sampled_from([None, 1, "x", {}, []]))
    doc = put(doc, path, nested(depth, kind, leaf))
    sid = SERVICES[hook]
    send(api, "POST", f"/cds-services/{sid}", encode(doc), JSON)
    send(api, "POST", f"/cds-services/{sid}/feedback", encode(nested(depth, kind, leaf)), JSON)


@fuzz(40)
@given(
    data=st.data(),
    size=st.sampled_from([10_000, 100_000, 1_000_000, 5_300_000]),
    char=st.sampled_from(["x", "é", "😀", "\\", '"', "\u0000"]),
)
def test_huge_strings(api: FlaskClient, data: st.DataObject, size: int, char: str) -> None:
    """A huge string (up to past the 5 MiB body limit) at a random place of a fixture."""
    hook, _name, original = data.draw(st.sampled_from(FIXTURES))
    doc = copy.deepcopy(original)
    paths = json_paths(doc)
    path = paths[data.draw(st.integers(0, len(paths) - 1))]
    doc = put(doc, path, char * (size // len(json.dumps(char))))
    send(api, "POST", f"/cds-services/{SERVICES[hook]}", encode(doc), JSON)


@st.composite
def feedback_bodies(
    draw: st.DrawFn,
    issued: Issued,
    surrogates: bool,
    mutate: bool = True,
) -> tuple[str, Any]:
    """A valid feedback body on a card the app issued, then mutated; returns (service, body)."""
    sid = draw(st.sampled_from(SERVICE_IDS))
    card = copy.deepcopy(draw(st.sampled_from(issued[sid])))  # mutated below
    suggestions = [s["uuid"] for s in card.get("suggestions", ()) if "uuid" in s]
    if suggestions and draw(st.booleans()):
        item: dict[str, Any] = {
            "card": card["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": draw(st.sampled_from(suggestions))}],
        }
    else:
        item = {"card": card["uuid"], "outcome": "overridden"}
        if card.get("overrideReasons") and draw(st.booleans()):
            item["overrideReason"] = {"reason": draw(st.sampled_from(card["overrideReasons"]))}
    item["outcomeTimestamp"] = draw(
        st.sampled_from(
            ["2026-11-23T12:00:00Z", "2026-11-23T12:00:00.5+01:00", "1985-04-12t23:20:50z"]
        )
    )
    doc: Any = {"feedback": [item]}
    for _ in range(draw(st.integers(0, 3)) if mutate else 0):
        path = any_path(draw, doc)
        op = draw(st.sampled_from(["drop", "replace", "retype", "text", "duplicate"]))
        if op in GENERIC_MUTATIONS:
            doc = mutated(draw, doc, path, op, surrogates)
        elif isinstance(doc, dict) and isinstance(doc.get("feedback"), list):
            copies = draw(st.sampled_from([2, 2, 3, 5, 8, 50]))
            doc["feedback"] = [copy.deepcopy(i) for _ in range(copies) for i in doc["feedback"]]
    target = draw(st.sampled_from([sid, sid, *SERVICE_IDS, "unknown-service"])) if mutate else sid
    return target, doc


@fuzz(1000)
@given(data=st.data())
def test_feedback_mutations(api: FlaskClient, issued: Issued, data: st.DataObject) -> None:
    """Feedback on real cards, valid or mutated, to the right service and others."""
    sid, doc = data.draw(feedback_bodies(issued, surrogates=True))
    ctype = data.draw(st.sampled_from([JSON, "application/fhir+json", "text/plain"]))
    send(api, "POST", f"/cds-services/{sid}/feedback", encode(doc), ctype)
    if data.draw(st.integers(0, 9)) == 0:
        send(api, "GET", f"/cds-services/{sid}/feedback/summary")


def test_every_route_is_fuzzed(api: FlaskClient) -> None:
    """Every route the app serves (Flask's own /static aside) is in ROUTE_PATHS, so it gets
    requests in every run, and is one the random paths of test_random_requests can reach."""
    app = api.application
    adapter = app.url_map.bind("localhost")
    served = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert {routed_to(adapter, path) for path in ROUTE_PATHS} == served
    for rule in sorted(served):
        find(
            PATHS,
            lambda path, rule=rule: routed_to(adapter, path) == rule,
            settings=settings(max_examples=2000, derandomize=True, database=None),
        )


# ----------------------------------------------------------------------------- regressions
# Bugs this fuzzing found (fixed since): the exact reproducers, and targeted searches.


LONE_SURROGATE_FEEDBACK = (
    b'{"feedback": [{"card": "\\ud800", "outcome": "overridden", '
    b'"outcomeTimestamp": "2026-11-23T12:00:00Z"}]}'
)


def test_feedback_with_lone_surrogate_card_is_not_5xx(api: FlaskClient) -> None:
    send(
        api, "POST", "/cds-services/calcinosis-patient-view/feedback", LONE_SURROGATE_FEEDBACK, JSON
    )


@st.composite
def feedback_with_lone_surrogates(draw: st.DrawFn, issued: Issued) -> tuple[str, Any]:
    """A valid feedback body with some of its strings replaced by ones with lone surrogates."""
    sid, doc = draw(feedback_bodies(issued, surrogates=False, mutate=False))
    strings = [p for p in json_paths(doc) if isinstance(at(doc, p), str)]
    for path in draw(st.lists(st.sampled_from(strings), min_size=1, max_size=3)):
        doc = put(doc, path, draw(st.text(max_size=5)) + draw(SURROGATES))
    return sid, doc


@fuzz(100)
@given(data=st.data())
def test_feedback_with_lone_surrogates_is_not_5xx(
    api: FlaskClient, issued: Issued, data: st.DataObject
) -> None:
    sid, doc = data.draw(feedback_with_lone_surrogates(issued))
    send(api, "POST", f"/cds-services/{sid}/feedback", encode(doc), JSON)


def test_paths_with_empty_segments_are_not_redirected(api: FlaskClient) -> None:
    send(api, "POST", "/cds-services//calcinosis-patient-view", b"{}", JSON)


@pytest.mark.parametrize(
    ("hook", "name", "where"),
    [
        ("patient-view", "02-aluminium-egfr-22", ("prefetch", "observations")),
        ("patient-view", "02-aluminium-egfr-22", ("prefetch", "medications")),
        ("order-sign", "31-sign-aluminium-ckd4-coded", ("context", "draftOrders")),
    ],
    ids=["observation", "medication-request", "draft-order"],
)
def test_unhashable_status_is_not_5xx(
    api: FlaskClient, hook: str, name: str, where: tuple[str, str]
) -> None:
    body = load_request(name, hook)
    body[where[0]][where[1]]["entry"][0]["resource"]["status"] = []
    send(api, "POST", f"/cds-services/{SERVICES[hook]}", encode(body), JSON)


@st.composite
def fixture_with_unhashable_status(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A mutated fixture in which one Observation or MedicationRequest has an array or object
    `status` (built directly: waiting for random mutations to make one is a lottery)."""
    hook, doc = draw(mutated_fixture())
    paths = [
        path
        for path in json_paths(doc)
        if path[-1:] == ("status",)
        and isinstance(parent := at(doc, path[:-1]), dict)
        and parent.get("resourceType") in ("Observation", "MedicationRequest")
    ]
    assume(paths)
    status = draw(
        st.one_of(
            st.lists(json_values(), max_size=3),
            st.dictionaries(st.text(max_size=5), json_values(), max_size=3),
        )
    )
    return hook, put(doc, draw(st.sampled_from(paths)), status)


@fuzz(40, shrink=False)
@given(case=fixture_with_unhashable_status())
def test_fixture_mutations_with_unhashable_status(api: FlaskClient, case: tuple[str, Any]) -> None:
    """Mutated fixtures with an array or object status somewhere."""
    hook, doc = case
    assert unhashable_status(doc)
    send(api, "POST", f"/cds-services/{SERVICES[hook]}", encode(doc), JSON)
