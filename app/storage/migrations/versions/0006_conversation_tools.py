"""Conversations with tools: the conversation's tool definitions, the calls an assistant turn
made, and the call a `tool` turn answers.

Revision ID: 0006_tools
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_tools"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("tools", sa.JSON(), nullable=True))
    op.add_column("conversation_messages", sa.Column("tool_calls", sa.JSON(), nullable=True))
    op.add_column("conversation_messages", sa.Column("tool_call_id", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversation_messages") as batch:
        batch.drop_column("tool_call_id")
        batch.drop_column("tool_calls")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("tools")
