"""Uploaded files: `/v1/files`, and the files batches and vector stores read and write.

A file belongs to the key that uploaded it: another key gets the same 404 as for a file that
does not exist (nothing says it exists), and the admin API (owner `None`) sees every file. An
expired file is gone the moment it expires, before any sweep deletes its bytes.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from sqlalchemy import and_, or_, select

from app.clock import Clocks, as_utc, unix
from app.errors import InvalidRequest, NotFound, PayloadTooLarge
from app.storage import files as store
from app.storage.db import Database
from app.storage.files import FileRow

UploadPurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
"""What a client may upload a file for (OpenAI's list)."""
UPLOAD_PURPOSES: tuple[str, ...] = get_args(UploadPurpose)
SYSTEM_PURPOSES = ("assistants_output", "batch_output")
"""What only the service writes (batch results)."""
MIN_EXPIRY = 3600
MAX_EXPIRY = 30 * 24 * 3600
"""OpenAI's bounds on `expires_after[seconds]`: one hour to thirty days."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file as the API shows it (never its bytes)."""

    id: str
    owner: str
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str
    content_type: str | None


def _stored(row: FileRow) -> StoredFile:
    return StoredFile(
        id=row.id,
        owner=row.owner,
        bytes=row.bytes,
        created_at=unix(row.created_at),
        expires_at=unix(row.expires_at) if row.expires_at is not None else None,
        filename=row.filename,
        purpose=row.purpose,
        content_type=row.content_type,
    )


def display_name(filename: str | None) -> str:
    """The name shown back: its last path part, without control characters, at most 255 chars.
    It is never used to open, type or route anything."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] or "upload"


class FileService:
    """Stores, lists, reads and deletes files, with their owner's rules."""

    def __init__(self, db: Database, clocks: Clocks, *, max_bytes: int) -> None:
        self._db = db
        self._clocks = clocks
        self.max_bytes = max_bytes

    def check_upload(self, purpose: str | None, expires_after_seconds: int | None) -> str:
        """400 unless `purpose` may be uploaded and the expiry is within OpenAI's bounds."""
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"'{purpose}' is not a valid purpose; expected one of {', '.join(UPLOAD_PURPOSES)}.",
                param="purpose",
            )
        if expires_after_seconds is not None and not MIN_EXPIRY <= expires_after_seconds <= MAX_EXPIRY:
            raise InvalidRequest(
                f"expires_after[seconds] must be between {MIN_EXPIRY} and {MAX_EXPIRY}.",
                param="expires_after.seconds",
            )
        return purpose

    async def create(
        self,
        owner: str,
        *,
        filename: str,
        content: bytes,
        purpose: str,
        content_type: str | None = None,
        expires_after_seconds: int | None = None,
    ) -> StoredFile:
        """Store `content` for `owner`; 413 beyond the size limit, 400 for an empty file."""
        if len(content) > self.max_bytes:
            raise PayloadTooLarge(f"The file is larger than {self.max_bytes} bytes.", param="file")
        if not content:
            raise InvalidRequest("The file is empty.", param="file", code="empty_file")
        now = self._clocks.now()
        row = FileRow(
            id=f"file-{uuid.uuid4().hex[:24]}",
            owner=owner,
            purpose=purpose,
            filename=display_name(filename),
            content_type=(content_type or None) and content_type[:255],
            bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            created_at=now,
            expires_at=(
                now.replace(microsecond=0) + timedelta(seconds=expires_after_seconds)
                if expires_after_seconds
                else None
            ),
        )
        async with self._db.session() as session, session.begin():
            await store.add_file(session, row, content)
        return _stored(row)

    def _visible(self, row: FileRow | None, owner: str | None) -> FileRow | None:
        if row is None or (owner is not None and row.owner != owner):
            return None
        if row.expires_at is not None and as_utc(row.expires_at) <= self._clocks.now():
            return None
        return row

    async def _row(self, owner: str | None, file_id: str) -> FileRow:
        async with self._db.session() as session:
            row = self._visible(await store.get_file(session, file_id), owner)
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return row

    async def get(self, owner: str | None, file_id: str) -> StoredFile:
        return _stored(await self._row(owner, file_id))

    async def content(self, owner: str | None, file_id: str) -> bytes:
        row = await self._row(owner, file_id)
        async with self._db.session() as session:
            return await store.read_content(session, row.id)

    async def list_files(
        self,
        owner: str | None,
        *,
        purpose: str | None = None,
        limit: int = 10_000,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
    ) -> tuple[list[StoredFile], bool]:
        """A page of `owner`'s files (all files for the admin), and whether more follow."""
        now = self._clocks.now()
        query = select(FileRow).where(or_(FileRow.expires_at.is_(None), FileRow.expires_at > now))
        if owner is not None:
            query = query.where(FileRow.owner == owner)
        if purpose is not None:
            query = query.where(FileRow.purpose == purpose)
        async with self._db.session() as session:
            if after is not None:
                cursor = self._visible(await store.get_file(session, after), owner)
                if cursor is None:
                    raise NotFound(f"No such File object: {after}", param="after", code="file_not_found")
                later = order == "asc"
                query = query.where(
                    or_(
                        FileRow.created_at > cursor.created_at
                        if later
                        else FileRow.created_at < cursor.created_at,
                        and_(
                            FileRow.created_at == cursor.created_at,
                            FileRow.id > cursor.id if later else FileRow.id < cursor.id,
                        ),
                    )
                )
            if order == "asc":
                query = query.order_by(FileRow.created_at.asc(), FileRow.id.asc())
            else:
                query = query.order_by(FileRow.created_at.desc(), FileRow.id.desc())
            rows = list((await session.execute(query.limit(limit + 1))).scalars())
        return [_stored(row) for row in rows[:limit]], len(rows) > limit

    async def delete(self, owner: str | None, file_id: str) -> bool:
        """Delete the file and its bytes; 404 when `owner` cannot see it."""
        row = await self._row(owner, file_id)
        async with self._db.session() as session, session.begin():
            return await store.delete_files(session, [row.id]) == 1

    async def delete_expired(self, now: int, limit: int) -> int:
        """Delete up to `limit` files that expired by `now` (unix seconds), rows and bytes together."""
        moment = datetime.fromtimestamp(now, UTC)
        async with self._db.session() as session, session.begin():
            query = select(FileRow.id).where(FileRow.expires_at <= moment).limit(limit)
            ids = list((await session.execute(query)).scalars())
            return await store.delete_files(session, ids)

    async def erase_owner(self, owner: str) -> int:
        """Delete every file `owner` uploaded (and the service wrote for it)."""
        async with self._db.session() as session, session.begin():
            ids = list((await session.execute(select(FileRow.id).where(FileRow.owner == owner))).scalars())
            return await store.delete_files(session, ids)
