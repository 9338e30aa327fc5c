"""The operations routes: the OpenAPI description, Prometheus metrics, the version, liveness
and readiness."""

from __future__ import annotations

import platform
from functools import cache
from typing import Any

import yaml
from flask import Blueprint, Response, abort, jsonify

from cds_service.hooks import OPENAPI_FILE
from cds_service.observability import DISTRIBUTION, package_version
from cds_service.terminology import YAML_LOADER
from cds_service.web.body import engine

bp = Blueprint("ops", __name__)


@cache
def _openapi() -> dict[str, Any]:
    text = OPENAPI_FILE.read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.load(text, Loader=YAML_LOADER)  # noqa: S506
    # The version of the package that serves it, whatever the file says (it can lag behind).
    document["info"]["version"] = package_version()
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this service, for integrators and fuzzers."""
    return jsonify(_openapi())


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics (all workers added up under gunicorn); 404 with CDS_METRICS=off.
    Public like /healthz: restrict it at the load balancer."""
    observed = engine().metrics
    if observed is None:
        abort(404)
    body, content_type = observed.exposition()
    return Response(body, content_type=content_type)


@bp.get("/version")
def version() -> Response:
    """What is running: the package, the knowledge and Python versions (no token needed)."""
    return jsonify(
        {
            "service": DISTRIBUTION,
            "version": package_version(),
            "knowledgeVersion": engine().knowledge_version,
            "python": platform.python_version(),
        }
    )


@bp.get("/livez")
def livez() -> Response:
    """Liveness: the process answers. Nothing else is checked (a database outage must not get
    the workers restarted: they answer without it)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@bp.get("/healthz")  # the older name, kept: the same answer as /readyz
def readyz() -> Response:
    """Readiness: the store answers and can be written, its schema is in place, the knowledge
    is loaded; 503 with the reasons in JSON otherwise."""
    cds = engine()
    store = cds.store.readiness()
    ready = bool(store.pop("ready"))
    response = jsonify(
        {
            "status": "ok" if ready else "unavailable",
            "knowledgeVersion": cds.knowledge_version,
            "checks": store,
        }
    )
    response.status_code = 200 if ready else 503
    return response
