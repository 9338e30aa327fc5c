"""The operations routes: the OpenAPI description, Prometheus metrics and the health check."""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml
from flask import Blueprint, Response, abort, jsonify

from cds_service.hooks import OPENAPI_FILE
from cds_service.terminology import YAML_LOADER
from cds_service.web.body import engine

bp = Blueprint("ops", __name__)


@cache
def _openapi() -> dict[str, Any]:
    return yaml.load(OPENAPI_FILE.read_text(encoding="utf-8"), Loader=YAML_LOADER)  # noqa: S506


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


@bp.get("/healthz")
def healthz() -> Response:
    cds = engine()
    ok = cds.store.healthy()
    response = jsonify(
        {"status": "ok" if ok else "unavailable", "knowledgeVersion": cds.knowledge_version}
    )
    response.status_code = 200 if ok else 503
    return response
