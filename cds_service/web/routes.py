"""The CDS Hooks routes: discovery, a service call, feedback and its summary."""

from __future__ import annotations

from collections import Counter

from flask import Blueprint, Response, g, jsonify

from cds_service.observability import hook_instance
from cds_service.trust import VerifiedClient
from cds_service.web.body import engine, json_body, negotiate_language
from cds_service.web.middleware import measure

bp = Blueprint("cds_hooks", __name__)
# A feedback body is small (at most 100 entries of a few hundred bytes): a larger one is refused
# before it is read or validated.
FEEDBACK_MAX_BYTES = 256 * 1024


@bp.get("/cds-services")
def discovery() -> Response:
    return jsonify(engine().discovery())


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    cds = engine()
    cds.service(service_id)  # 404 before reading the body
    body = json_body()
    fields = g.log_fields  # the call's log line (written by middleware.observe)
    if (instance := hook_instance(body.get("hookInstance"))) is not None:
        fields["hookInstance"] = instance
    lang = negotiate_language()
    fields["lang"] = lang
    client: VerifiedClient | None = g.get("client")
    servers = client.issuer.fhir_servers if client is not None else None
    evaluation = cds.evaluate(service_id, body, lang, fhir_servers=servers)
    fields["cards"] = [f"{c.rule_id}:{c.indicator}" for c in evaluation.issued]
    measure(
        lambda m: m.cards_issued(service_id, ((c.rule_id, c.indicator) for c in evaluation.issued))
    )
    response = jsonify(evaluation.body)
    response.headers["Content-Language"] = lang
    return response


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    cds = engine()
    cds.service(service_id)
    body = json_body(max_bytes=FEEDBACK_MAX_BYTES)
    stored = cds.receive_feedback(service_id, body)
    outcomes = [item["outcome"] for item in body["feedback"]]  # validated: accepted/overridden
    g.log_fields.update(entries=stored, outcomes=dict(Counter(outcomes)))
    measure(lambda m: m.feedback_stored(service_id, outcomes))
    return jsonify({"stored": stored})


@bp.get("/cds-services/<service_id>/feedback/summary")
def feedback_summary(service_id: str) -> Response:
    return jsonify(engine().feedback_summary(service_id))
