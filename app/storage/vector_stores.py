"""Vector stores, the files attached to them, and their file batches (`/v1/vector_stores`).

A store file's row is also its ingestion job: `status = in_progress` with a lease (`leased_by`,
`lease_until`) that the replica doing the work renews; a replica that dies leaves the lease to
expire, and another claims the row and does the work again (the chunk index replaces a file's
chunks whole, so work done twice is stored once).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.base import Base


class VectorStoreRow(Base):
    __tablename__ = "vector_stores"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_active_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_after_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """OpenAI's `expires_after` (anchor `last_active_at`), in days; None: never."""
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True, nullable=True)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON)


class VectorStoreFileRow(Base):
    __tablename__ = "vector_store_files"
    __table_args__ = (Index("ix_vector_store_files_work", "status", "lease_until"),)

    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    """in_progress, completed, cancelled or failed."""
    last_error: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    max_chunk_tokens: Mapped[int] = mapped_column(Integer)
    chunk_overlap_tokens: Mapped[int] = mapped_column(Integer)
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    leased_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class VectorStoreFileBatchRow(Base):
    __tablename__ = "vector_store_file_batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
