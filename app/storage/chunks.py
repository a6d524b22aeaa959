"""The chunks of vector store files (the table the chunk index searches)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Integer, LargeBinary, String, Text
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
