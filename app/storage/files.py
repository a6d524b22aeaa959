"""Uploaded files (`/v1/files`) and their bytes, and the queries on them.

The bytes live in the database, in 1 MiB pieces (`file_blobs`), so every replica sees every file
without a shared disk and a file's row and its bytes are written and deleted in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.base import Base

BLOB_PIECE = 1 << 20
"""Bytes per `file_blobs` row: small enough for any driver's parameter limits, big enough that a
100 MB file is a hundred rows."""


class FileRow(Base):
    """One uploaded file. Its name and content type are shown back, never trusted."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    """The key id that uploaded it: only that key (and the admin API) sees it."""
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True, nullable=True)


class FileBlob(Base):
    """One piece of a file's bytes, in order."""

    __tablename__ = "file_blobs"

    file_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


async def add_file(session: AsyncSession, row: FileRow, content: bytes) -> None:
    session.add(row)
    await session.flush()
    for seq, start in enumerate(range(0, len(content), BLOB_PIECE)):
        session.add(FileBlob(file_id=row.id, seq=seq, data=content[start : start + BLOB_PIECE]))
    await session.flush()


async def get_file(session: AsyncSession, file_id: str) -> FileRow | None:
    return await session.get(FileRow, file_id)


async def read_content(session: AsyncSession, file_id: str) -> bytes:
    query = select(FileBlob.data).where(FileBlob.file_id == file_id).order_by(FileBlob.seq)
    return b"".join((await session.execute(query)).scalars())


async def delete_files(session: AsyncSession, file_ids: Sequence[str]) -> int:
    """Delete the files and their bytes together (blobs first: SQLite may not enforce the cascade)."""
    if not file_ids:
        return 0
    await session.execute(delete(FileBlob).where(FileBlob.file_id.in_(file_ids)))
    result = await session.execute(delete(FileRow).where(FileRow.id.in_(file_ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
