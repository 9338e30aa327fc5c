"""Application factory: wires settings, the engine (knowledge + store) and the HTTP layer."""

from __future__ import annotations

import logging

from flask import Flask

from cds_service import web
from cds_service.devtools import preview
from cds_service.engine import CdsEngine
from cds_service.errors import StoreUnavailable
from cds_service.observability import configure_logging
from cds_service.settings import Settings
from cds_service.store import Store
from cds_service.store_guard import GuardedStore
from cds_service.trust import JwtVerifier, load_issuers
from cds_service.web.json_provider import JsonProvider

log = logging.getLogger("cds_service")
BOOT_SCHEMA_SECONDS = 2.0  # the longest a starting worker waits for the schema (it goes on)


def _verifier(settings: Settings, store: GuardedStore) -> JwtVerifier | None:
    """The JWT verifier of this worker, or None when authentication is off (development)."""
    if settings.auth != "jwt":
        log.warning(
            "AUTHENTICATION IS OFF (CDS_AUTH=off): any caller can use this service. "
            "Development only; see the README, Security."
        )
        return None
    assert settings.trusted_issuers_file is not None
    issuers = load_issuers(settings.trusted_issuers_file)  # refuses a file with no issuer
    return JwtVerifier(
        issuers,
        algorithms=settings.jwt_algorithms,
        replay=lambda iss, jti, until: store.remember_jti(iss, jti, until, settings.now()),
        clock=settings.clock,
    )


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app; with no settings, read them from the environment."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    engine = CdsEngine(settings, Store.from_url(settings.database_url))
    store = engine.store  # guarded by the engine (store_guard.py)
    # A worker boots without the database: the schema is created when the store answers;
    # /readyz says what is missing meanwhile.
    try:
        ready = store.call_within(BOOT_SCHEMA_SECONDS, store.ensure_schema)
    except StoreUnavailable:
        ready = False
    if not ready:
        log.error("the store did not answer at start-up: serving without it until it does")

    app = Flask(__name__, static_folder=None)  # a JSON API: no static files
    # "//cds-services" is not a route: a 404 in JSON, not a redirect with an HTML body.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = JsonProvider(app)  # orjson for the responses (web/json_provider.py)
    app.json.sort_keys = False  # keep cards in the order the spec documents them
    app.extensions["cds_engine"] = engine
    app.extensions["cds_verifier"] = _verifier(settings, store)
    web.init_app(app)
    if settings.preview:  # the card preview page at "/" (a developer tool, CDS_PREVIEW)
        app.register_blueprint(preview.bp)
    return app
