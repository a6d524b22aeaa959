"""The whole schema: importing this module registers every table module on `Base.metadata`
(what Alembic compares migrations against and what tests create directly)."""

from __future__ import annotations

from app.storage import batches, chunks, conversations, files, probes, responses, tables, vector_stores
from app.storage.base import Base

__all__ = [
    "Base",
    "batches",
    "chunks",
    "conversations",
    "files",
    "probes",
    "responses",
    "tables",
    "vector_stores",
]
