"""The store's schema migrations (Alembic), run by cds_service/migrate.py: `calcinosis-cds
migrate`, `serve` before its workers start, or a worker when the store first answers.

Each change to the tables of cds_service/store.py needs a revision here (tests/test_migrations.py
fails until the migrations give the tables store.py defines). A new revision: a file in
versions/ whose `down_revision` is the current head, numbered after it; its tables and columns
are written out in the file (a migration never imports store.py, which moves on). Alembic can
draft one against a database at head:

    from alembic import command
    from cds_service.migrate import alembic_config
    with engine.begin() as conn:
        command.revision(alembic_config(conn), "what changes", autogenerate=True,
                         rev_id="0003")
"""
