"""Generation records and feedback (issue 3): one row per generation, one rating per generation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "generation_records",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("preset", sa.String(64), nullable=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("sampling", sa.JSON(), nullable=False),
        sa.Column("tuned", sa.Boolean(), nullable=False),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("finish_reason", sa.String(32), nullable=True),
        sa.Column("aborted", sa.Boolean(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("prompt", sa.JSON(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_records")),
    )
    op.create_index(
        op.f("ix_generation_records_created_at"), "generation_records", ["created_at"], unique=False
    )
    op.create_index(
        "ix_generation_records_preset_variant",
        "generation_records",
        ["preset", "tuned", "variant"],
        unique=False,
    )
    op.create_table(
        "feedback",
        sa.Column("generation_id", sa.String(64), nullable=False),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generation_records.id"],
            name=op.f("fk_feedback_generation_id_generation_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("generation_id", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_updated_at"), "feedback", ["updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_feedback_updated_at"), table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_generation_records_preset_variant", table_name="generation_records")
    op.drop_index(op.f("ix_generation_records_created_at"), table_name="generation_records")
    op.drop_table("generation_records")
