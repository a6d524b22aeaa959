"""Vector stores: OpenAI's `/v1/vector_stores` objects, the ingestion of their files, and search.

A store and its files belong to the key that made them; another key gets 404 for all of it.
Attaching a file makes a `vector_store_files` row `in_progress`; that row is the ingestion job.
Every replica runs a worker that claims such rows under a lease (FOR UPDATE SKIP LOCKED on
PostgreSQL), renews the lease while it embeds, and ends the row `completed` or `failed` with
OpenAI's `last_error`; a row whose lease ran out (its replica died) is claimed again. Chunks are
replaced per (store, file), so a file ingested twice is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import Clocks, as_utc, unix
from app.errors import InvalidRequest, NotFound, NotInstalled
from app.services.apps.files import FileService
from app.services.generation.context import RequestContext
from app.services.retrieval.embeddings import EmbeddingService
from app.services.retrieval.extract import ExtractionError, ExtractLimits
from app.services.retrieval.filters import parse_filter
from app.services.retrieval.index import ChunkIndex, Hit, SearchQuery
from app.services.retrieval.ingest import IngestJob, ingest
from app.storage.db import Database
from app.storage.vector_stores import VectorStoreFileBatchRow, VectorStoreFileRow, VectorStoreRow

log = logging.getLogger("genserve.vector_stores")

MAX_ATTEMPTS = 3
"""Claims of one file before it fails with `server_error` (a file that kills its replica every
time must not be retried forever)."""


@dataclass(frozen=True, slots=True)
class FileCounts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.in_progress + self.completed + self.failed + self.cancelled

    def as_dict(self) -> dict[str, int]:
        return {
            "in_progress": self.in_progress,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "total": self.total,
        }


@dataclass(frozen=True, slots=True)
class VectorStore:
    id: str
    name: str
    created_at: int
    last_active_at: int
    expires_after_days: int | None
    expires_at: int | None
    metadata: dict[str, str]
    usage_bytes: int
    file_counts: FileCounts
    expired: bool

    @property
    def status(self) -> str:
        if self.expired:
            return "expired"
        return "in_progress" if self.file_counts.in_progress else "completed"


@dataclass(frozen=True, slots=True)
class StoreFile:
    store_id: str
    file_id: str
    created_at: int
    status: str
    last_error: dict[str, str] | None
    attributes: dict[str, Any]
    max_tokens: int
    overlap: int
    usage_bytes: int


@dataclass(frozen=True, slots=True)
class FileBatch:
    id: str
    store_id: str
    created_at: int
    file_counts: FileCounts
    cancelled: bool

    @property
    def status(self) -> str:
        if self.file_counts.in_progress:
            return "cancelling" if self.cancelled else "in_progress"
        if self.cancelled:
            return "cancelled"
        return "completed"


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """One search: what the route read from `VectorStoreSearchRequest` (or a file_search tool)."""

    query: str | list[str]
    max_num_results: int = 10
    filters: dict[str, Any] | None = None
    ranker: str = "auto"
    score_threshold: float = 0.0
    embedding_weight: float | None = None
    text_weight: float | None = None
    rewrite_query: bool = False

    @property
    def queries(self) -> list[str]:
        return [self.query] if isinstance(self.query, str) else list(self.query)


@dataclass(frozen=True, slots=True)
class Attach:
    """A file to attach: its id, attributes and chunk sizes."""

    file_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 800
    overlap: int = 400


def _store_file(row: VectorStoreFileRow) -> StoreFile:
    return StoreFile(
        store_id=row.store_id,
        file_id=row.file_id,
        created_at=unix(row.created_at),
        status=row.status,
        last_error=row.last_error,
        attributes=dict(row.attributes or {}),
        max_tokens=row.max_chunk_tokens,
        overlap=row.chunk_overlap_tokens,
        usage_bytes=row.usage_bytes,
    )


class VectorStoreService:
    """Stores, their files and batches, search, and the ingestion worker."""

    def __init__(
        self,
        db: Database,
        files: FileService,
        embeddings: EmbeddingService,
        index: ChunkIndex,
        clocks: Clocks,
        *,
        extract_limits: ExtractLimits,
        lease_seconds: float = 60.0,
        missing: str | None = None,
    ) -> None:
        self._db = db
        self._files = files
        self._embeddings = embeddings
        self._index = index
        self._clocks = clocks
        self._limits = extract_limits
        self._lease = timedelta(seconds=lease_seconds)
        self._replica = f"replica-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._stopping = False
        self.missing = missing
        """Why vector stores cannot work here (no embedding model, or the `embed` extra's
        document libraries absent), or None."""

    def require(self) -> None:
        """501 saying what to install when vector stores cannot work on this installation."""
        if self.missing is not None:
            raise NotInstalled(self.missing)

    # --- stores -------------------------------------------------------------------------------

    async def _counts(self, session: AsyncSession, column: Any, key: str) -> tuple[FileCounts, int]:
        query = (
            select(
                VectorStoreFileRow.status,
                func.count(),
                func.coalesce(func.sum(VectorStoreFileRow.usage_bytes), 0),
            )
            .where(column == key)
            .group_by(VectorStoreFileRow.status)
        )
        counts: dict[str, int] = {}
        usage = 0
        for status, count, used in (await session.execute(query)).all():
            counts[status] = int(count)
            usage += int(used)
        return FileCounts(**{k: v for k, v in counts.items() if k in FileCounts.__dataclass_fields__}), usage

    async def _view(self, session: AsyncSession, row: VectorStoreRow) -> VectorStore:
        counts, usage = await self._counts(session, VectorStoreFileRow.store_id, row.id)
        expires_at = as_utc(row.expires_at)
        return VectorStore(
            id=row.id,
            name=row.name,
            created_at=unix(row.created_at),
            last_active_at=unix(row.last_active_at),
            expires_after_days=row.expires_after_days,
            expires_at=unix(expires_at) if expires_at is not None else None,
            metadata=dict(row.metadata_ or {}),
            usage_bytes=usage,
            file_counts=counts,
            expired=expires_at is not None and expires_at <= self._clocks.now(),
        )

    async def _row(self, session: AsyncSession, owner: str, store_id: str) -> VectorStoreRow:
        row = await session.get(VectorStoreRow, store_id)
        if row is None or row.owner != owner:
            raise NotFound(
                f"No vector store found with id '{store_id}'.",
                param="vector_store_id",
                code="vector_store_not_found",
            )
        return row

    def _touch(self, row: VectorStoreRow) -> None:
        """A store is active when it is used; its expiry counts from then."""
        now = self._clocks.now()
        row.last_active_at = now
        if row.expires_after_days is not None:
            row.expires_at = now + timedelta(days=row.expires_after_days)

    async def create(
        self,
        owner: str,
        *,
        name: str,
        description: str | None,
        metadata: dict[str, str] | None,
        expires_after_days: int | None,
        attach: Sequence[Attach] = (),
    ) -> VectorStore:
        now = self._clocks.now()
        row = VectorStoreRow(
            id=f"vs_{uuid.uuid4().hex[:24]}",
            owner=owner,
            name=name,
            description=description,
            created_at=now,
            last_active_at=now,
            expires_after_days=expires_after_days,
            expires_at=now + timedelta(days=expires_after_days) if expires_after_days else None,
            metadata_=dict(metadata or {}),
        )
        await self._check_files(owner, [a.file_id for a in attach])
        async with self._db.session() as session, session.begin():
            session.add(row)
            await session.flush()
            for item in attach:
                session.add(self._file_row(row.id, owner, item, None))
            await session.flush()
            view = await self._view(session, row)
        self._wake.set()
        return view

    async def get(self, owner: str, store_id: str) -> VectorStore:
        async with self._db.session() as session:
            return await self._view(session, await self._row(session, owner, store_id))

    async def list_stores(
        self, owner: str, *, limit: int, order: str, after: str | None, before: str | None
    ) -> tuple[list[VectorStore], bool]:
        async with self._db.session() as session:
            query = select(VectorStoreRow).where(VectorStoreRow.owner == owner)
            desc = order == "desc"
            for cursor_id, later in ((after, not desc), (before, desc)):
                if cursor_id is not None:
                    cursor = await self._row(session, owner, cursor_id)
                    key = (cursor.created_at, cursor.id)
                    cmp = (VectorStoreRow.created_at, VectorStoreRow.id)
                    query = query.where(
                        or_(cmp[0] > key[0], (cmp[0] == key[0]) & (cmp[1] > key[1]))
                        if later
                        else or_(cmp[0] < key[0], (cmp[0] == key[0]) & (cmp[1] < key[1]))
                    )
            ordering = (
                (VectorStoreRow.created_at.desc(), VectorStoreRow.id.desc())
                if desc
                else (VectorStoreRow.created_at.asc(), VectorStoreRow.id.asc())
            )
            rows = list((await session.execute(query.order_by(*ordering).limit(limit + 1))).scalars())
            views = [await self._view(session, r) for r in rows[:limit]]
        return views, len(rows) > limit

    async def modify(
        self,
        owner: str,
        store_id: str,
        *,
        name: str | None,
        metadata: dict[str, str] | None,
        expires_after_days: int | bool | None,
    ) -> VectorStore:
        """`expires_after_days=False`: leave the policy as it is."""
        async with self._db.session() as session, session.begin():
            row = await self._row(session, owner, store_id)
            if name is not None:
                row.name = name
            if metadata is not None:
                row.metadata_ = dict(metadata)
            if expires_after_days is not False:
                row.expires_after_days = expires_after_days if isinstance(expires_after_days, int) else None
                row.expires_at = None
            self._touch(row)
            await session.flush()
            return await self._view(session, row)

    async def delete(self, owner: str, store_id: str) -> None:
        """Delete the store, its files' attachments and its chunks (the files stay)."""
        async with self._db.session() as session, session.begin():
            row = await self._row(session, owner, store_id)
            await session.execute(delete(VectorStoreFileRow).where(VectorStoreFileRow.store_id == store_id))
            await session.execute(
                delete(VectorStoreFileBatchRow).where(VectorStoreFileBatchRow.store_id == store_id)
            )
            await session.delete(row)
        await self._index.remove_store(store_id)

    # --- files --------------------------------------------------------------------------------

    async def _check_files(self, owner: str, file_ids: Sequence[str]) -> None:
        for i, file_id in enumerate(file_ids):
            try:
                await self._files.get(owner, file_id)
            except NotFound:
                raise NotFound(
                    f"No file found with id '{file_id}'.", param=f"file_ids[{i}]", code="file_not_found"
                ) from None

    def _file_row(self, store_id: str, owner: str, item: Attach, batch_id: str | None) -> VectorStoreFileRow:
        return VectorStoreFileRow(
            store_id=store_id,
            file_id=item.file_id,
            owner=owner,
            batch_id=batch_id,
            created_at=self._clocks.now(),
            status="in_progress",
            last_error=None,
            attributes=dict(item.attributes),
            max_chunk_tokens=item.max_tokens,
            chunk_overlap_tokens=item.overlap,
            usage_bytes=0,
            attempts=0,
        )

    async def _attach(
        self, owner: str, store_id: str, items: Sequence[Attach], batch_id: str | None
    ) -> list[StoreFile]:
        """Attach (or re-attach, which ingests again) files to a store."""
        await self._check_files(owner, [i.file_id for i in items])
        async with self._db.session() as session, session.begin():
            store = await self._row(session, owner, store_id)
            self._touch(store)
            rows = []
            for item in items:
                existing = await session.get(VectorStoreFileRow, (store_id, item.file_id))
                if existing is not None:
                    await session.delete(existing)
                    await session.flush()
                row = self._file_row(store_id, owner, item, batch_id)
                session.add(row)
                rows.append(row)
            await session.flush()
            result = [_store_file(r) for r in rows]
        self._wake.set()
        return result

    async def attach(self, owner: str, store_id: str, item: Attach) -> StoreFile:
        return (await self._attach(owner, store_id, [item], None))[0]

    async def _file(
        self, session: AsyncSession, owner: str, store_id: str, file_id: str
    ) -> VectorStoreFileRow:
        await self._row(session, owner, store_id)
        row = await session.get(VectorStoreFileRow, (store_id, file_id))
        if row is None:
            raise NotFound(
                f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id"
            )
        return row

    async def get_file(self, owner: str, store_id: str, file_id: str) -> StoreFile:
        async with self._db.session() as session:
            return _store_file(await self._file(session, owner, store_id, file_id))

    async def list_files(
        self,
        owner: str,
        store_id: str,
        *,
        limit: int,
        order: str,
        after: str | None,
        status: str | None,
        batch_id: str | None = None,
    ) -> tuple[list[StoreFile], bool]:
        async with self._db.session() as session:
            await self._row(session, owner, store_id)
            query = select(VectorStoreFileRow).where(VectorStoreFileRow.store_id == store_id)
            if status is not None:
                query = query.where(VectorStoreFileRow.status == status)
            if batch_id is not None:
                query = query.where(VectorStoreFileRow.batch_id == batch_id)
            if order == "desc":
                query = query.order_by(
                    VectorStoreFileRow.created_at.desc(), VectorStoreFileRow.file_id.desc()
                )
            else:
                query = query.order_by(VectorStoreFileRow.created_at.asc(), VectorStoreFileRow.file_id.asc())
            rows = [_store_file(r) for r in (await session.execute(query)).scalars()]
        if after is not None:
            ids = [r.file_id for r in rows]
            if after not in ids:
                raise NotFound(f"No file found with id '{after}' in this vector store.", param="after")
            rows = rows[ids.index(after) + 1 :]
        return rows[:limit], len(rows) > limit

    async def update_attributes(
        self, owner: str, store_id: str, file_id: str, attributes: dict[str, Any]
    ) -> StoreFile:
        async with self._db.session() as session, session.begin():
            row = await self._file(session, owner, store_id, file_id)
            row.attributes = dict(attributes)
            await session.flush()
            result = _store_file(row)
        await self._index.set_attributes(store_id, file_id, dict(attributes))
        return result

    async def detach(self, owner: str, store_id: str, file_id: str) -> None:
        """Remove a file from a store (the file itself stays in /v1/files)."""
        async with self._db.session() as session, session.begin():
            row = await self._file(session, owner, store_id, file_id)
            await session.delete(row)
        await self._index.remove_file(store_id, file_id)

    async def file_content(self, owner: str, store_id: str, file_id: str) -> list[str]:
        """The parsed chunks of a store's file, in order."""
        async with self._db.session() as session:
            await self._file(session, owner, store_id, file_id)
        return [hit.text for hit in await self._index.file_chunks(store_id, file_id)]

    # --- file batches -------------------------------------------------------------------------

    async def create_batch(self, owner: str, store_id: str, items: Sequence[Attach]) -> FileBatch:
        batch_id = f"vsfb_{uuid.uuid4().hex[:24]}"
        async with self._db.session() as session, session.begin():
            await self._row(session, owner, store_id)
            session.add(
                VectorStoreFileBatchRow(
                    id=batch_id, store_id=store_id, owner=owner, created_at=self._clocks.now(), cancelled=0
                )
            )
        await self._attach(owner, store_id, items, batch_id)
        return await self.get_batch(owner, store_id, batch_id)

    async def _batch_row(
        self, session: AsyncSession, owner: str, store_id: str, batch_id: str
    ) -> VectorStoreFileBatchRow:
        await self._row(session, owner, store_id)
        row = await session.get(VectorStoreFileBatchRow, batch_id)
        if row is None or row.store_id != store_id:
            raise NotFound(f"No file batch found with id '{batch_id}'.", param="batch_id")
        return row

    async def get_batch(self, owner: str, store_id: str, batch_id: str) -> FileBatch:
        async with self._db.session() as session:
            row = await self._batch_row(session, owner, store_id, batch_id)
            counts, _ = await self._counts(session, VectorStoreFileRow.batch_id, batch_id)
        return FileBatch(
            id=row.id,
            store_id=store_id,
            created_at=unix(row.created_at),
            file_counts=counts,
            cancelled=bool(row.cancelled),
        )

    async def cancel_batch(self, owner: str, store_id: str, batch_id: str) -> FileBatch:
        """Files of the batch not yet ingested end `cancelled`; a file being ingested right now
        finishes, or is cancelled when its worker next checks in."""
        async with self._db.session() as session, session.begin():
            row = await self._batch_row(session, owner, store_id, batch_id)
            row.cancelled = 1
            await session.execute(
                update(VectorStoreFileRow)
                .where(VectorStoreFileRow.batch_id == batch_id, VectorStoreFileRow.status == "in_progress")
                .values(status="cancelled", leased_by=None, lease_until=None)
            )
        return await self.get_batch(owner, store_id, batch_id)

    # --- search -------------------------------------------------------------------------------

    async def search(self, ctx: RequestContext, store_ids: Sequence[str], spec: SearchSpec) -> list[Hit]:
        """The best passages of `store_ids` for `spec`; 404 for a store `ctx`'s key may not see."""
        self.require()
        owner = ctx.owner
        filt = parse_filter(spec.filters) if spec.filters is not None else None
        async with self._db.session() as session, session.begin():
            for store_id in store_ids:
                self._touch(await self._row(session, owner, store_id))
        weights = {}
        if spec.embedding_weight is not None and spec.text_weight is not None:
            if spec.embedding_weight + spec.text_weight <= 0:
                raise InvalidRequest(
                    "hybrid_search weights must not both be zero.",
                    param="ranking_options.hybrid_search.embedding_weight",
                )
            weights = {"embedding_weight": spec.embedding_weight, "text_weight": spec.text_weight}
        embedder = self._embeddings.embedder()
        vectors = (await embedder.embed(spec.queries, kind="query", priority="interactive")).vectors
        best: dict[tuple[str, str, int], Hit] = {}
        for text, vector in zip(spec.queries, vectors, strict=True):
            query = SearchQuery(
                text=text,
                vector=vector,
                max_results=spec.max_num_results,
                filter=filt,
                score_threshold=spec.score_threshold,
                ranker=spec.ranker,  # type: ignore[arg-type]
                **weights,
            )
            for hit in await self._index.search(store_ids, query):
                key = (hit.store_id, hit.file_id, hit.seq)
                if key not in best or best[key].score < hit.score:
                    best[key] = hit
        ranked = sorted(best.values(), key=lambda h: h.score, reverse=True)
        return ranked[: spec.max_num_results]

    async def readiness(self, owner: str, store_ids: Sequence[str]) -> dict[str, str]:
        """Per store: `completed`, `in_progress` (a file still ingesting) or `empty`."""
        out = {}
        for store_id in store_ids:
            view = await self.get(owner, store_id)
            if view.file_counts.total == 0:
                out[store_id] = "empty"
            else:
                out[store_id] = "in_progress" if view.file_counts.in_progress else "completed"
        return out

    # --- retention ----------------------------------------------------------------------------

    async def delete_expired(self, now: int, limit: int) -> int:
        moment = datetime.fromtimestamp(now, self._clocks.now().tzinfo)
        async with self._db.session() as session:
            query = select(VectorStoreRow).where(VectorStoreRow.expires_at <= moment).limit(limit)
            rows = list((await session.execute(query)).scalars())
        for row in rows:
            await self.delete(row.owner, row.id)
        return len(rows)

    async def erase_owner(self, owner: str) -> int:
        async with self._db.session() as session:
            ids = list(
                (
                    await session.execute(select(VectorStoreRow.id).where(VectorStoreRow.owner == owner))
                ).scalars()
            )
        for store_id in ids:
            await self.delete(owner, store_id)
        return len(ids)

    # --- the ingestion worker -----------------------------------------------------------------

    async def _claim(self) -> VectorStoreFileRow | None:
        """One file whose ingestion is due (never started, or its lease ran out), now ours."""
        now = self._clocks.now()
        async with self._db.session() as session, session.begin():
            query = (
                select(VectorStoreFileRow)
                .where(
                    VectorStoreFileRow.status == "in_progress",
                    or_(VectorStoreFileRow.lease_until.is_(None), VectorStoreFileRow.lease_until < now),
                )
                .order_by(VectorStoreFileRow.created_at)
                .limit(1)
            )
            if not self._db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            row = (await session.execute(query)).scalar_one_or_none()
            if row is None:
                return None
            # Conditional on what we read: on SQLite (no row locks) two replicas may read the same
            # row, and only one of these updates matches.
            claimed = await session.execute(
                update(VectorStoreFileRow)
                .where(
                    VectorStoreFileRow.store_id == row.store_id,
                    VectorStoreFileRow.file_id == row.file_id,
                    VectorStoreFileRow.status == "in_progress",
                    VectorStoreFileRow.attempts == row.attempts,
                )
                .values(leased_by=self._replica, lease_until=now + self._lease, attempts=row.attempts + 1)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            await session.refresh(row)
            return row

    async def _renew(self, row: VectorStoreFileRow) -> None:
        async with self._db.session() as session, session.begin():
            renewed = await session.execute(
                update(VectorStoreFileRow)
                .where(
                    VectorStoreFileRow.store_id == row.store_id,
                    VectorStoreFileRow.file_id == row.file_id,
                    VectorStoreFileRow.leased_by == self._replica,
                    VectorStoreFileRow.status == "in_progress",
                )
                .values(lease_until=self._clocks.now() + self._lease)
            )
        if renewed.rowcount != 1:  # type: ignore[attr-defined]
            raise _LeaseLost

    async def _finish(self, row: VectorStoreFileRow, status: str, **values: Any) -> bool:
        async with self._db.session() as session, session.begin():
            done = await session.execute(
                update(VectorStoreFileRow)
                .where(
                    VectorStoreFileRow.store_id == row.store_id,
                    VectorStoreFileRow.file_id == row.file_id,
                    VectorStoreFileRow.leased_by == self._replica,
                    VectorStoreFileRow.status == "in_progress",
                )
                .values(status=status, leased_by=None, lease_until=None, **values)
            )
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    async def run_one(self) -> bool:
        """Ingest one due file, if there is one; False when there was nothing to do."""
        row = await self._claim()
        if row is None:
            return False
        if row.attempts > MAX_ATTEMPTS:
            error = {"code": "server_error", "message": "The file could not be processed."}
            await self._finish(row, "failed", last_error=error)
            return True
        try:
            stored = await self._files.get(row.owner, row.file_id)
            content = await self._files.content(row.owner, row.file_id)
        except NotFound:
            await self._finish(
                row, "failed", last_error={"code": "invalid_file", "message": "The file was deleted."}
            )
            return True
        job = IngestJob(
            store_id=row.store_id,
            file_id=row.file_id,
            filename=stored.filename,
            content_type=stored.content_type,
            attributes=dict(row.attributes or {}),
            max_tokens=row.max_chunk_tokens,
            overlap=row.chunk_overlap_tokens,
        )
        try:
            used = await ingest(
                job,
                content,
                embedder=self._embeddings.embedder(),
                index=self._index,
                limits=self._limits,
                heartbeat=lambda: self._renew(row),
            )
        except _LeaseLost:
            return True  # cancelled, detached, or taken over: nothing of ours to finish
        except ExtractionError as exc:
            await self._finish(row, "failed", last_error={"code": exc.code, "message": str(exc)})
            return True
        except Exception:
            log.exception("ingestion of a vector store file failed; it will be retried")
            await self._release(row)
            return True
        if not await self._finish(row, "completed", usage_bytes=used, last_error=None):
            # Detached or cancelled while we worked: leave no chunks behind for it.
            async with self._db.session() as session:
                current = await session.get(VectorStoreFileRow, (row.store_id, row.file_id))
            if current is None or current.status == "cancelled":
                await self._index.remove_file(row.store_id, row.file_id)
        return True

    async def _release(self, row: VectorStoreFileRow) -> None:
        async with self._db.session() as session, session.begin():
            await session.execute(
                update(VectorStoreFileRow)
                .where(
                    VectorStoreFileRow.store_id == row.store_id,
                    VectorStoreFileRow.file_id == row.file_id,
                    VectorStoreFileRow.leased_by == self._replica,
                )
                .values(leased_by=None, lease_until=None)
            )

    async def run_worker(self, poll_seconds: float) -> None:
        """Ingest due files until stopped; wakes when a file is attached, else every `poll_seconds`
        (to pick up files of replicas that died)."""
        while not self._stopping:
            try:
                if await self.run_one():
                    continue
            except Exception:
                log.warning("the ingestion worker could not reach the database", exc_info=True)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=poll_seconds)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()


class _LeaseLost(Exception):
    """Our lease on a file was taken away (cancelled, detached or expired and claimed again)."""
