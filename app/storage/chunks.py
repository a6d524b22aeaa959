"""The chunks of vector store files (the table the chunk index searches)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import DDL, JSON, Integer, LargeBinary, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.base import Base


class ChunkRow(Base):
    __tablename__ = "vector_store_chunks"

    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(512))
    text: Mapped[str] = mapped_column(Text)
    words: Mapped[str] = mapped_column(Text)
    """The text's words for keyword search (Chinese segmented: app/services/retrieval/segment.py)."""
    tokens: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    """Little-endian float32, L2-normalised."""
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)


class StoreVersionRow(Base):
    """Bumped on every change to a store's chunks: replicas' vector caches compare it."""

    __tablename__ = "vector_store_versions"

    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


# The keyword side's index, also when tests create the tables from `Base.metadata` rather than
# by migrating (the same statements as migration 0014).
FTS5_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS vector_store_chunks_fts USING fts5("
    "words, store_id UNINDEXED, file_id UNINDEXED, seq UNINDEXED, tokenize='unicode61')"
)
FTS5_VOCAB = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS vector_store_chunks_fts_vocab "
    "USING fts5vocab(vector_store_chunks_fts, row)"
)
GIN_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_vector_store_chunks_words ON vector_store_chunks "
    "USING gin (to_tsvector('simple', words))"
)


def _ddl(statement: str, dialect: str) -> DDL:
    return DDL(statement).execute_if(dialect=dialect)  # type: ignore[no-untyped-call]


event.listen(ChunkRow.__table__, "after_create", _ddl(FTS5_TABLE, "sqlite"))
event.listen(ChunkRow.__table__, "after_create", _ddl(FTS5_VOCAB, "sqlite"))
event.listen(ChunkRow.__table__, "after_create", _ddl(GIN_INDEX, "postgresql"))
DROP_VOCAB = "DROP TABLE IF EXISTS vector_store_chunks_fts_vocab"
DROP_FTS5 = "DROP TABLE IF EXISTS vector_store_chunks_fts"
event.listen(ChunkRow.__table__, "before_drop", _ddl(DROP_VOCAB, "sqlite"))
event.listen(ChunkRow.__table__, "before_drop", _ddl(DROP_FTS5, "sqlite"))
