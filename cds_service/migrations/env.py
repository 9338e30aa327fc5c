"""Alembic's entry point: migrations run on the connection cds_service/migrate.py passes in
(already in the transaction that holds the migration lock); no alembic.ini, no logging set-up."""

from __future__ import annotations

from alembic import context

from cds_service.store import metadata  # what autogenerate compares the database with


def run() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite changes a table by copying it (ALTER TABLE does little there).
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):  # run by Alembic; imported anywhere else, it does nothing
    run()
