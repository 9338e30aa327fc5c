"""The card preview page's routes (Flask test client): the page and its strict CSP, its static
files only, the fixture list and files (no path traversal), the request builder's answers and
errors, public even with JWT authentication, and absent when CDS_PREVIEW is off."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient

from cds_service.devtools.preview.routes import STATIC_DIR
from tests.conftest import (
    FIXTURE_ROOT,
    SERVICES,
    app_with,
    collection,
    expected_indicators,
    fixture_resources,
    load_expected,
    load_request,
)

PV = "calcinosis-patient-view"


def outcome(response: Any, status: int, expression: str | None = None) -> str:
    """Check an OperationOutcome answer; return its diagnostics."""
    assert response.status_code == status, response.get_data()[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue.get("expression") == ([expression] if expression else None)
    return issue["diagnostics"]


# ----------------------------------------------------------------------------- the page


def test_page_is_served_with_a_strict_csp(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "form-action": "'none'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
    }
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    html = response.get_data(as_text=True)
    assert html == (STATIC_DIR / "preview.html").read_text(encoding="utf-8")
    assert '<script type="module" src="/preview/static/preview.js">' in html
    assert 'href="/preview/static/preview.css"' in html
    assert client.head("/").status_code == 200


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [("preview.html", "text/html"), ("preview.js", "text/javascript"), ("preview.css", "text/css")],
)
def test_static_files_are_served(client: FlaskClient, name: str, mimetype: str) -> None:
    response = client.get(f"/preview/static/{name}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.get_data() == (STATIC_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/preview/static/nope.js",
        "/preview/static/..%2Froutes.py",
        "/preview/static/%2E%2E%2F__init__.py",
        "/preview/static/../routes.py",
        "/preview/static/",
        "/preview/static/preview.js/x",
        "/preview/static/PREVIEW.JS",
    ],
)
def test_only_the_static_files_are_served(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    outcome(response, 404)
    assert b"def " not in response.get_data()


def test_the_page_loads_nothing_from_elsewhere_and_builds_no_html() -> None:
    """A static guard beside the browser tests: no external URL in the page, its script or its
    style, and the script never turns strings into HTML or code."""
    html = (STATIC_DIR / "preview.html").read_text(encoding="utf-8")
    css = (STATIC_DIR / "preview.css").read_text(encoding="utf-8")
    js = (STATIC_DIR / "preview.js").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "style=" not in html  # the CSP allows no inline style
    assert "<script>" not in html
    assert "url(" not in css
    assert "@import" not in css
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("on',
        "DOMParser",
        "createContextualFragment",
    ):
        assert sink not in js, sink
    # Every URL literal in the script is a path of this service.
    assert re.findall(r"https?://", js) == []


# ----------------------------------------------------------------------------- fixtures


def listing(root: Path) -> list[dict[str, Any]]:
    """What GET /preview/fixtures must answer for a fixtures folder, read independently."""
    found = []
    hooks = ["patient-view", "order-select", "order-sign"]  # the order the hooks come in
    paths = sorted(root.glob("*/*.request.json"), key=lambda p: (hooks.index(p.parent.name), p))
    for path in paths:
        name = path.name[: -len(".request.json")]
        expected = path.with_name(f"{name}.expected.json")
        entry: dict[str, Any] = {"hook": path.parent.name, "name": name, "description": ""}
        if expected.exists():
            document = json.loads(expected.read_text(encoding="utf-8"))
            entry["description"] = document["description"]
        found.append(entry)
    return found


def test_fixture_list_equals_the_files(client: FlaskClient) -> None:
    listed = client.get("/preview/fixtures").get_json()
    assert listed == listing(FIXTURE_ROOT)
    requests = sorted(FIXTURE_ROOT.glob("*/*.request.json"))
    assert len(listed) == len(requests) > 40
    assert {entry["hook"] for entry in listed} == set(SERVICES)
    for entry in listed:
        assert entry["description"] == load_expected(entry["name"], entry["hook"])["description"]


def test_fixture_list_of_another_folder(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "patient-view").mkdir(parents=True)
    (folder / "patient-view" / "a.request.json").write_text("{}")
    (folder / "patient-view" / "a.expected.json").write_text('{"description": "A"}')
    (folder / "patient-view" / "b.request.json").write_text("{}")  # no expected outcome
    (folder / "patient-view" / "c.expected.json").write_text("[]")  # no request: not listed
    (folder / "patient-view" / "d.request.json").write_text("{}")
    (folder / "patient-view" / "d.expected.json").write_text("not json")
    (folder / "top.request.json").write_text("{}")  # not under a hook folder
    (folder / "order-sign").mkdir()
    with app_with(tmp_path, fixtures_dir=folder) as app:
        assert app.test_client().get("/preview/fixtures").get_json() == [
            {"hook": "patient-view", "name": "a", "description": "A"},
            {"hook": "patient-view", "name": "b", "description": ""},
            {"hook": "patient-view", "name": "d", "description": ""},
        ]
    with app_with(tmp_path, fixtures_dir=tmp_path / "absent") as app:
        client = app.test_client()
        assert client.get("/preview/fixtures").get_json() == []
        outcome(client.get("/preview/fixtures/patient-view/a"), 404)


@pytest.mark.parametrize(
    ("hook", "name"),
    [("patient-view", "02-aluminium-egfr-22"), ("order-sign", "34-sign-two-drafts-dialysis")],
)
def test_a_fixture_is_its_request_file(client: FlaskClient, hook: str, name: str) -> None:
    response = client.get(f"/preview/fixtures/{hook}/{name}")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == load_request(name, hook)


@pytest.mark.parametrize(
    "path",
    [
        "/preview/fixtures/%2E%2E/secret",
        "/preview/fixtures/patient-view/..%2F..%2Fsecret",
        "/preview/fixtures/patient-view/%2E%2E%2F%2E%2E%2Fsecret",
        "/preview/fixtures/fixtures/..%2F..%2Fsecret",
        "/preview/fixtures/../../secret",
        "/preview/fixtures/patient-view/one.expected",
        "/preview/fixtures/patient-view/one.request.json",
        "/preview/fixtures/patient-view/one%00",
        "/preview/fixtures/patient-view/ONE",
        "/preview/fixtures/order-sign/one",
        "/preview/fixtures/patient-view",
        "/preview/fixtures/patient-view/one/x",
    ],
)
def test_fixture_paths_cannot_escape(tmp_path: Path, path: str) -> None:
    """Only listed fixtures are served: a secret request file beside the folder stays out."""
    folder = tmp_path / "fixtures"
    (folder / "patient-view").mkdir(parents=True)
    (folder / "patient-view" / "one.request.json").write_text('{"hook": "patient-view"}')
    (folder / "patient-view" / "one.expected.json").write_text('{"description": "secret-free"}')
    (tmp_path / "secret.request.json").write_text('{"secret": true}')
    with app_with(tmp_path, fixtures_dir=folder) as app:
        client = app.test_client()
        assert client.get("/preview/fixtures/patient-view/one").get_json() == {
            "hook": "patient-view"
        }
        response = client.get(path)
        assert response.status_code in (404, 405), path
        assert b"secret" not in response.get_data()
        assert response.get_json()["resourceType"] == "OperationOutcome"


# ----------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("hook", "name"),
    [
        ("patient-view", "02-aluminium-egfr-22"),
        ("order-select", "21-select-aluminium-egfr-22"),
        ("order-sign", "34-sign-two-drafts-dialysis"),
    ],
)
def test_a_bundle_becomes_the_request_the_service_expects(
    client: FlaskClient, hook: str, name: str
) -> None:
    service = SERVICES[hook]
    response = client.post(
        "/preview/requests",
        json={"serviceId": service, "bundle": collection(fixture_resources(name, hook))},
    )
    assert response.status_code == 200, response.get_json()
    built = response.get_json()
    original = load_request(name, hook)
    assert built["hook"] == hook
    assert built["context"]["patientId"] == original["context"]["patientId"]
    assert set(built["prefetch"]) == set(original["prefetch"])
    cards = client.post(f"/cds-services/{service}", json=built).get_json()["cards"]
    assert [c["indicator"] for c in cards] == expected_indicators(name, hook)


def test_the_patient_id_chooses_among_patients(client: FlaskClient) -> None:
    two = collection(
        fixture_resources("02-aluminium-egfr-22") + fixture_resources("01-ssc-calcinosis")
    )
    body = {"serviceId": PV, "bundle": two}
    assert "2 Patient resources" in outcome(
        client.post("/preview/requests", json=body), 400, "bundle"
    )
    response = client.post("/preview/requests", json={**body, "patientId": " fix-02 "})
    assert response.status_code == 200
    built = response.get_json()
    assert built["context"]["patientId"] == "fix-02"
    assert built["prefetch"]["patient"]["id"] == "fix-02"


def test_a_malformed_resource_is_left_for_the_service_to_name(client: FlaskClient) -> None:
    resources = [
        {"resourceType": "Patient", "id": "p"},
        {
            "resourceType": "MedicationRequest",
            "status": ["active"],
            "subject": {"reference": "Patient/p"},
        },
    ]
    built = client.post(
        "/preview/requests", json={"serviceId": PV, "bundle": collection(resources)}
    )
    assert built.status_code == 200
    assert len(built.get_json()["prefetch"]["medications"]["entry"]) == 1
    # The service reads no MedicationRequest without a medication: no card, and no error.
    assert client.post(f"/cds-services/{PV}", json=built.get_json()).get_json() == {"cards": []}


@pytest.mark.parametrize(
    ("body", "status", "expression", "says"),
    [
        ({"bundle": {"resourceType": "Patient", "id": "p"}}, 400, "serviceId", "serviceId"),
        ({"serviceId": 3, "bundle": {"resourceType": "Patient"}}, 400, "serviceId", "serviceId"),
        ({"serviceId": "nope", "bundle": {"resourceType": "Patient"}}, 404, "serviceId", "no CDS"),
        ({"serviceId": PV}, 400, "bundle", "bundle"),
        ({"serviceId": PV, "bundle": []}, 400, "bundle", "bundle"),
        ({"serviceId": PV, "bundle": {"entry": []}}, 400, "bundle", "resourceType"),
        (
            {"serviceId": PV, "bundle": {"resourceType": "Bundle", "entry": [{}]}},
            400,
            "bundle",
            "entry[0]",
        ),
        (
            {"serviceId": PV, "bundle": {"resourceType": "Bundle", "entry": 5}},
            400,
            "bundle",
            "type",
        ),
        ({"serviceId": PV, "bundle": {"resourceType": "Bundle"}}, 400, "bundle", "no Patient"),
        (
            {"serviceId": PV, "bundle": {"resourceType": "Patient", "id": "p"}, "patientId": 7},
            400,
            "patientId",
            "patientId",
        ),
        (
            {"serviceId": PV, "bundle": {"resourceType": "Patient", "id": "p"}, "patientId": " "},
            400,
            "patientId",
            "patientId",
        ),
        (
            {"serviceId": SERVICES["order-sign"], "bundle": {"resourceType": "Patient", "id": "p"}},
            400,
            "bundle",
            "draft",
        ),
    ],
)
def test_request_builder_errors_name_the_field(
    client: FlaskClient, body: dict[str, Any], status: int, expression: str, says: str
) -> None:
    diagnostics = outcome(client.post("/preview/requests", json=body), status, expression)
    assert says in diagnostics


def test_request_builder_body_errors(client: FlaskClient) -> None:
    outcome(client.post("/preview/requests", data="{", content_type="application/json"), 400, "$")
    outcome(client.post("/preview/requests", json=[1]), 400, "$")
    outcome(
        client.post("/preview/requests", data="{}", content_type="text/plain"),
        415,
        "header Content-Type",
    )
    outcome(client.get("/preview/requests"), 405)


# ----------------------------------------------------------------------------- on and off


def test_preview_routes_stay_public_with_jwt_authentication(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    issuers = tmp_path / "issuers.json"
    issuers.write_text(
        json.dumps(
            {
                "issuers": [
                    {"iss": "https://ehr.example.org", "jwks": {"keys": [{**public, "kid": "k1"}]}}
                ]
            }
        )
    )
    with app_with(tmp_path, auth="jwt", trusted_issuers_file=issuers) as app:
        client = app.test_client()
        assert client.get("/cds-services").status_code == 401
        assert client.get("/").status_code == 200
        assert client.get("/preview/static/preview.js").status_code == 200
        assert client.get("/preview/fixtures").status_code == 200
        assert client.get("/preview/fixtures/patient-view/02-aluminium-egfr-22").status_code == 200
        body = {"serviceId": PV, "bundle": collection(fixture_resources("02-aluminium-egfr-22"))}
        assert client.post("/preview/requests", json=body).status_code == 200


def test_preview_off_means_no_page(tmp_path: Path) -> None:
    with app_with(tmp_path, preview=False) as app:
        assert not [r.rule for r in app.url_map.iter_rules() if r.endpoint.startswith("preview.")]
        client = app.test_client()
        for path in ("/", "/preview/static/preview.js", "/preview/fixtures"):
            diagnostics = outcome(client.get(path), 404)
            assert "no such endpoint" in diagnostics
        outcome(client.post("/preview/requests", json={}), 404)
        assert client.get("/cds-services").status_code == 200


def test_preview_is_on_by_default_and_registered(client: FlaskClient) -> None:
    rules = {r.rule for r in client.application.url_map.iter_rules()}
    assert {
        "/",
        "/preview/static/<filename>",
        "/preview/fixtures",
        "/preview/fixtures/<hook>/<name>",
        "/preview/requests",
    } <= rules
