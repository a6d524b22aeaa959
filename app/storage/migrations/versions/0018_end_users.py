"""Keyed hashes of the end user (`user`, `safety_identifier`) on generation records and stored
responses, so that one end user's data can be erased (issue 22 §3). Only an HMAC under the
server's pseudonym secret is stored, never the raw identifier.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TABLES = ("generation_records", "responses")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("user_hash", sa.String(64), nullable=True))
        op.add_column(table, sa.Column("safety_hash", sa.String(64), nullable=True))
        op.create_index(f"ix_{table}_user_hash", table, ["user_hash"])
        op.create_index(f"ix_{table}_safety_hash", table, ["safety_hash"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_safety_hash", table_name=table)
        op.drop_index(f"ix_{table}_user_hash", table_name=table)
        op.drop_column(table, "safety_hash")
        op.drop_column(table, "user_hash")
