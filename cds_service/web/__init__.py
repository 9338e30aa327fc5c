"""The HTTP layer, and the only one that knows Flask: the CDS Hooks routes, the operations
routes, the middleware (in the order `init_app` registers it) and the JSON errors."""

from __future__ import annotations

from flask import Flask

from cds_service.web import errors, middleware, ops, routes
from cds_service.web.body import engine, json_body, negotiate_language

__all__ = ["engine", "init_app", "json_body", "negotiate_language"]


def init_app(app: Flask) -> None:
    """Register the routes, the middleware and the error handlers on `app`."""
    middleware.init_app(app)
    app.register_blueprint(routes.bp)
    app.register_blueprint(ops.bp)
    errors.init_app(app)
