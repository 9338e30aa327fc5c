"""HTTP routes of the card preview page (a developer tool; off in production, CDS_PREVIEW).

- ``GET /``: the page (static HTML, one ES module, one stylesheet; no build step), with a
  strict Content-Security-Policy: nothing but this service is ever contacted.
- ``GET /preview/static/<file>``: only the files of ``static/`` listed in STATIC_FILES.
- ``GET /preview/fixtures``: the synthetic fixture patients (``settings.fixtures_dir``).
- ``GET /preview/fixtures/<hook>/<name>``: one fixture's CDS Hooks request. Only names found by
  listing the folder are served, so no path ever reaches the file system from the URL.
- ``POST /preview/requests``: ``{"serviceId", "bundle", "patientId"?}`` -> the CDS Hooks
  request the service would receive for these FHIR resources (cds_service.devtools.hookrequest).

The routes need no JWT even with CDS_AUTH=jwt (authentication guards /cds-services only):
they expose synthetic fixtures and a request builder, never the store.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify

from cds_service.devtools.fixture_set import list_fixtures
from cds_service.devtools.hookrequest import RequestBuildError, build_request, resources_of
from cds_service.errors import InputError, NotFound
from cds_service.settings import Settings
from cds_service.web import engine, json_body

bp = Blueprint("preview", __name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "preview.html": "text/html",
    "preview.js": "text/javascript",
    "preview.css": "text/css",
}
# The page talks to this service only: no external script, style, font, image or connection.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _settings() -> Settings:
    return engine().settings


def _static(name: str) -> Response:
    response = Response((STATIC_DIR / name).read_bytes(), mimetype=STATIC_FILES[name])
    if name == "preview.html":
        response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


# ----------------------------------------------------------------------------- fixtures


@bp.get("/")
def page() -> Response:
    return _static("preview.html")


@bp.get("/preview/static/<filename>")
def static_file(filename: str) -> Response:
    if filename not in STATIC_FILES:
        raise NotFound("no such file of the preview page", path=None)
    return _static(filename)


@bp.get("/preview/fixtures")
def fixtures() -> Response:
    """The fixture patients: hook, name, description (and service) of each, sorted."""
    return jsonify(
        [
            {"hook": f.hook, "name": f.name, "description": f.description}
            for f in list_fixtures(_settings().fixtures_dir)
        ]
    )


@bp.get("/preview/fixtures/<hook>/<name>")
def fixture(hook: str, name: str) -> Response:
    # Only a fixture found by listing the folder: nothing from the URL reaches the file system.
    for found in list_fixtures(_settings().fixtures_dir):
        if (found.hook, found.name) == (hook, name):
            return Response(found.request_path.read_bytes(), mimetype="application/json")
    raise NotFound("no such fixture; see GET /preview/fixtures", path=None)


# ----------------------------------------------------------------------------- requests


@bp.post("/preview/requests")
def build() -> Response:
    """The CDS Hooks request a service would receive for one patient's FHIR resources."""
    body = json_body()
    service_id = body.get("serviceId")
    if not isinstance(service_id, str) or not service_id:
        raise InputError("serviceId must be the id of a CDS service", path="serviceId")
    service = engine().services.get(service_id)
    if service is None:
        raise NotFound("no CDS service with this id; see GET /cds-services", path="serviceId")
    bundle = body.get("bundle")
    if not isinstance(bundle, dict):
        raise InputError("bundle must be a FHIR Bundle or resource (a JSON object)", path="bundle")
    patient_id = body.get("patientId")
    if patient_id is not None and (not isinstance(patient_id, str) or not patient_id.strip()):
        raise InputError("patientId must be a non-empty string when given", path="patientId")
    try:
        resources = resources_of(bundle)
        built = build_request(service, resources, patient_id=patient_id and patient_id.strip())
    except RequestBuildError as exc:
        raise InputError(str(exc), path="bundle") from None
    return jsonify(built)
