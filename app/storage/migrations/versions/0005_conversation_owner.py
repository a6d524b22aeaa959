"""Conversations belong to the client key that created them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Conversations started before keys existed were everyone's: they stay with `anonymous`.
    op.add_column(
        "conversations",
        sa.Column("owner", sa.String(64), nullable=False, server_default="anonymous"),
    )
    op.create_index(op.f("ix_conversations_owner"), "conversations", ["owner"])


def downgrade() -> None:
    op.drop_index(op.f("ix_conversations_owner"), table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("owner")
