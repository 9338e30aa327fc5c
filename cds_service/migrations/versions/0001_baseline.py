"""Baseline: the tables as version 0.6 created them (before migrations existed).

A database made by those versions (`metadata.create_all` and the nullable columns added later)
has these tables, or some of them, and no `alembic_version`: this revision adopts it. It
creates what is missing (tables, nullable columns, indexes) and touches nothing stored, so
running it on such a database stamps it at the baseline.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Written out here, not imported from store.py: the baseline never changes.
baseline = sa.MetaData()
sa.Table(
    "issued_cards",
    baseline,
    sa.Column("uuid", sa.String(36), primary_key=True),
    sa.Column("service_id", sa.String(128), nullable=False, index=True),
    sa.Column("rule_id", sa.String(128), nullable=False, index=True),
    sa.Column("variant", sa.String(64), nullable=False),
    sa.Column("indicator", sa.String(16), nullable=False),
    sa.Column("knowledge_version", sa.String(32), nullable=False),
    sa.Column("hook_instance", sa.String(128), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("subject_key", sa.String(64), nullable=True),
    sa.Column("evidence_hash", sa.String(64), nullable=True),
    sa.Column("encounter_key", sa.String(64), nullable=True),
    sa.Column("also_rules", sa.String(512), nullable=True),
)
sa.Table(
    "shown_cautions",
    baseline,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("shown_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "snoozes",
    baseline,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject_key", sa.String(64), nullable=False, index=True),
    sa.Column("evidence_hash", sa.String(64), nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("card_uuid", sa.String(36), nullable=False),
    sa.Column("encounter_key", sa.String(64), nullable=True),
)
sa.Table(
    "feedback",
    baseline,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.String(36), nullable=False, index=True),
    sa.Column("service_id", sa.String(128), nullable=False),
    sa.Column("rule_id", sa.String(128), nullable=False, index=True),
    sa.Column("knowledge_version", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("accepted_suggestions", sa.Text, nullable=True),
    sa.Column("override_system", sa.String(256), nullable=True),
    sa.Column("override_code", sa.String(128), nullable=True),
    sa.Column("override_display", sa.String(512), nullable=True),
    sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "seen_jtis",
    baseline,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


def upgrade() -> None:
    bind = op.get_bind()
    baseline.create_all(bind)  # the missing tables, with their indexes
    found = sa.inspect(bind)
    for table in baseline.sorted_tables:
        present = {c["name"] for c in found.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                # Only nullable columns were ever added to an existing table.
                assert column.nullable, f"{table.name}.{column.name}"
                op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))
        indexed = {i["name"] for i in found.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexed:
                index.create(bind)


def downgrade() -> None:
    baseline.drop_all(op.get_bind())
