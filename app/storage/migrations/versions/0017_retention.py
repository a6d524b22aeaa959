"""The retention sweeper's lease (one row per sweeper, held by one replica at a time), and indexes
on the moments the sweeper compares, so a sweep chunk reads an index range, never the whole table.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_responses_created_at", "responses", ["created_at"])
    op.create_index("ix_conversations_updated_at", "conversations", ["updated_at"])
    op.create_index("ix_probes_finished_at", "probes", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_probes_finished_at", "probes")
    op.drop_index("ix_conversations_updated_at", "conversations")
    op.drop_index("ix_responses_created_at", "responses")
    op.drop_table("retention_leases")
