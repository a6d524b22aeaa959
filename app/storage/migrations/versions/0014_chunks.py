"""The chunk index of vector stores: text, words for keyword search and vectors.

SQLite gets an FTS5 table beside it; PostgreSQL a GIN index on `to_tsvector('simple', words)`.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vector_store_chunks",
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("words", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "file_id", "seq", name=op.f("pk_vector_store_chunks")),
    )
    op.create_table(
        "vector_store_versions",
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", name=op.f("pk_vector_store_versions")),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE vector_store_chunks_fts USING fts5("
            "words, store_id UNINDEXED, file_id UNINDEXED, seq UNINDEXED, tokenize='unicode61')"
        )
        # Words' chunk counts: a search leaves out words too common to rank by (index.py).
        op.execute(
            "CREATE VIRTUAL TABLE vector_store_chunks_fts_vocab USING fts5vocab(vector_store_chunks_fts, row)"
        )
    else:
        op.execute(
            "CREATE INDEX ix_vector_store_chunks_words ON vector_store_chunks "
            "USING gin (to_tsvector('simple', words))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE vector_store_chunks_fts_vocab")
        op.execute("DROP TABLE vector_store_chunks_fts")
    op.drop_table("vector_store_versions")
    op.drop_table("vector_store_chunks")
