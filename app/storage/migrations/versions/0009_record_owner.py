"""Generation records name the client key that made them (feedback and reports are per key).

Revision ID: 0009
Revises: 0008_probes
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008_probes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Records made before keys were tracked belong to nobody's key: only the admin's views see them.
    op.add_column("generation_records", sa.Column("owner", sa.String(64), nullable=True))
    op.create_index(op.f("ix_generation_records_owner"), "generation_records", ["owner"])


def downgrade() -> None:
    op.drop_index(op.f("ix_generation_records_owner"), table_name="generation_records")
    with op.batch_alter_table("generation_records") as batch:
        batch.drop_column("owner")
