"""Indexes on the time columns that pruning selects by (issue 15): without them each batch of
a prune would read the whole table."""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = (
    ("issued_cards", "issued_at"),
    ("feedback", "received_at"),
    ("shown_cautions", "shown_at"),
    ("snoozes", "until"),
)


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
