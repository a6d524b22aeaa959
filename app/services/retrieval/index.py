"""The chunk index: keyword and vector search over vector stores' chunks, fused.

Keyword side: SQLite FTS5's BM25 on the segmented words, or PostgreSQL's full-text search
(`ts_rank_cd` over `to_tsvector('simple', words)`) when the database is PostgreSQL. Vector side:
exact cosine similarity with numpy over each store's matrix, which replicas cache within a
byte bound and reload when the store's version changes. The two rankings are fused by weighted
reciprocal rank fusion (k = 60). `ChunkIndex` is the seam where a vector engine (pgvector) can
replace the SQL implementation.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.retrieval.filters import Filter, matches
from app.services.retrieval.segment import words
from app.storage.chunks import ChunkRow, StoreVersionRow
from app.storage.db import Database

RRF_K = 60
CANDIDATES = 100
"""Candidates each side contributes to the fusion."""


@dataclass(frozen=True, slots=True)
class ChunkIn:
    seq: int
    text: str
    tokens: int
    vector: Sequence[float]


@dataclass(frozen=True, slots=True)
class Hit:
    store_id: str
    file_id: str
    filename: str
    seq: int
    text: str
    score: float
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    vector: Sequence[float]
    max_results: int = 10
    filter: Filter | None = None
    score_threshold: float = 0.0
    ranker: Literal["auto", "default-2024-11-15", "none"] = "auto"
    embedding_weight: float = 0.5
    text_weight: float = 0.5


class ChunkIndex(Protocol):
    async def add(
        self,
        store_id: str,
        file_id: str,
        filename: str,
        attributes: dict[str, Any],
        chunks: Sequence[ChunkIn],
    ) -> None: ...
    async def remove_file(self, store_id: str, file_id: str) -> int: ...
    async def remove_store(self, store_id: str) -> int: ...
    async def set_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None: ...
    async def file_chunks(self, store_id: str, file_id: str) -> list[Hit]: ...
    async def search(self, store_ids: Sequence[str], query: SearchQuery) -> list[Hit]: ...


@dataclass(slots=True)
class _Matrix:
    version: int
    keys: list[tuple[str, int]]
    """(file_id, seq) per row."""
    vectors: np.ndarray
    attributes: dict[str, dict[str, Any]]

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes) + 64 * len(self.keys)


def _fts_query(query: str) -> str:
    """An FTS5 MATCH string of the query's words, each quoted (no user syntax gets through)."""
    terms = dict.fromkeys(w.replace('"', "") for w in words(query))
    return " OR ".join(f'"{t}"' for t in terms if t)


class SqlChunkIndex:
    """The index in the service's own database."""

    def __init__(self, db: Database, *, cache_bytes: int = 512 << 20) -> None:
        self._db = db
        self._cache: OrderedDict[str, _Matrix] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._loading: dict[str, asyncio.Lock] = {}

    async def _bump(self, session: AsyncSession, store_id: str) -> None:
        updated = await session.execute(
            update(StoreVersionRow)
            .where(StoreVersionRow.store_id == store_id)
            .values(version=StoreVersionRow.version + 1)
        )
        if updated.rowcount == 0:  # type: ignore[attr-defined]
            session.add(StoreVersionRow(store_id=store_id, version=1))
            await session.flush()

    async def _delete(self, session: AsyncSession, store_id: str, file_id: str | None) -> int:
        where = [ChunkRow.store_id == store_id] + ([ChunkRow.file_id == file_id] if file_id else [])
        if self._db.is_sqlite:
            sql = "DELETE FROM vector_store_chunks_fts WHERE store_id = :s" + (
                " AND file_id = :f" if file_id else ""
            )
            await session.execute(text(sql), {"s": store_id, "f": file_id})
        result = await session.execute(delete(ChunkRow).where(*where))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def add(
        self,
        store_id: str,
        file_id: str,
        filename: str,
        attributes: dict[str, Any],
        chunks: Sequence[ChunkIn],
    ) -> None:
        rows = [
            ChunkRow(
                store_id=store_id,
                file_id=file_id,
                seq=c.seq,
                filename=filename,
                text=c.text,
                words=" ".join(words(c.text)),
                tokens=c.tokens,
                vector=np.asarray(c.vector, dtype="<f4").tobytes(),
                attributes=dict(attributes),
            )
            for c in chunks
        ]
        async with self._db.session() as session, session.begin():
            await self._delete(session, store_id, file_id)
            session.add_all(rows)
            await session.flush()
            if self._db.is_sqlite and rows:
                await session.execute(
                    text(
                        "INSERT INTO vector_store_chunks_fts (words, store_id, file_id, seq) "
                        "VALUES (:w, :s, :f, :q)"
                    ),
                    [{"w": r.words, "s": store_id, "f": file_id, "q": r.seq} for r in rows],
                )
            await self._bump(session, store_id)

    async def remove_file(self, store_id: str, file_id: str) -> int:
        async with self._db.session() as session, session.begin():
            removed = await self._delete(session, store_id, file_id)
            await self._bump(session, store_id)
        return removed

    async def remove_store(self, store_id: str) -> int:
        async with self._db.session() as session, session.begin():
            removed = await self._delete(session, store_id, None)
            await session.execute(delete(StoreVersionRow).where(StoreVersionRow.store_id == store_id))
        self._cache.pop(store_id, None)
        return removed

    async def set_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None:
        async with self._db.session() as session, session.begin():
            await session.execute(
                update(ChunkRow)
                .where(ChunkRow.store_id == store_id, ChunkRow.file_id == file_id)
                .values(attributes=dict(attributes))
            )
            await self._bump(session, store_id)

    async def file_chunks(self, store_id: str, file_id: str) -> list[Hit]:
        async with self._db.session() as session:
            query = (
                select(ChunkRow)
                .where(ChunkRow.store_id == store_id, ChunkRow.file_id == file_id)
                .order_by(ChunkRow.seq)
            )
            rows = list((await session.execute(query)).scalars())
        return [Hit(store_id, r.file_id, r.filename, r.seq, r.text, 1.0, dict(r.attributes)) for r in rows]

    async def _matrix(self, session: AsyncSession, store_id: str, version: int) -> _Matrix:
        cached = self._cache.get(store_id)
        if cached is not None and cached.version == version:
            self._cache.move_to_end(store_id)
            return cached
        query = select(ChunkRow.file_id, ChunkRow.seq, ChunkRow.vector, ChunkRow.attributes).where(
            ChunkRow.store_id == store_id
        )
        keys: list[tuple[str, int]] = []
        blobs: list[bytes] = []
        attributes: dict[str, dict[str, Any]] = {}
        for file_id, seq, vector, attrs in (await session.execute(query)).all():
            keys.append((file_id, seq))
            blobs.append(vector)
            attributes.setdefault(file_id, dict(attrs or {}))
        dims = len(blobs[0]) // 4 if blobs else 0
        vectors = (
            np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dims)
            if blobs
            else np.zeros((0, 0), "<f4")
        )
        matrix = _Matrix(version, keys, vectors, attributes)
        self._cache[store_id] = matrix
        self._cache.move_to_end(store_id)
        while sum(m.nbytes for m in self._cache.values()) > self._cache_bytes and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return matrix

    async def _keyword(
        self, session: AsyncSession, store_ids: Sequence[str], query: str, limit: int
    ) -> list[tuple[str, str, int]]:
        if self._db.is_sqlite:
            match = _fts_query(query)
            if not match:
                return []
            marks = ", ".join(f":s{i}" for i in range(len(store_ids)))
            sql = (
                "SELECT store_id, file_id, seq FROM vector_store_chunks_fts "
                f"WHERE vector_store_chunks_fts MATCH :m AND store_id IN ({marks}) ORDER BY rank LIMIT :n"
            )
            params: dict[str, Any] = {"m": match, "n": limit, **{f"s{i}": s for i, s in enumerate(store_ids)}}
        else:
            terms = list(dict.fromkeys(words(query)))
            if not terms:
                return []
            sql = (
                "SELECT store_id, file_id, seq FROM vector_store_chunks, "
                "to_tsquery('simple', :q) AS q WHERE store_id = ANY(:stores) "
                "AND to_tsvector('simple', words) @@ q "
                "ORDER BY ts_rank_cd(to_tsvector('simple', words), q) DESC LIMIT :n"
            )
            # Each word quoted as a lexeme (no tsquery syntax from users), OR-ed.
            quoted = " | ".join("'" + t.replace("'", "''").replace("\\", "") + "'" for t in terms)
            params = {"q": quoted, "stores": list(store_ids), "n": limit}
        return [(r[0], r[1], int(r[2])) for r in (await session.execute(text(sql), params)).all()]

    async def search(self, store_ids: Sequence[str], query: SearchQuery) -> list[Hit]:
        if not store_ids:
            return []
        wanted = np.asarray(query.vector, dtype="<f4")
        vector_rank: list[tuple[str, str, int]] = []
        async with self._db.session() as session:
            versions = dict(
                (
                    await session.execute(
                        select(StoreVersionRow.store_id, StoreVersionRow.version).where(
                            StoreVersionRow.store_id.in_(store_ids)
                        )
                    )
                ).all()
            )
            scored: list[tuple[float, str, str, int]] = []
            allowed: dict[str, set[str]] = {}
            for store_id in store_ids:
                if store_id not in versions:
                    continue
                matrix = await self._matrix(session, store_id, versions[store_id])
                ok = {
                    f
                    for f, attrs in matrix.attributes.items()
                    if query.filter is None or matches(query.filter, attrs)
                }
                allowed[store_id] = ok
                if not len(matrix.keys) or not ok or matrix.vectors.shape[1] != wanted.shape[0]:
                    continue
                sims = matrix.vectors @ wanted
                if len(ok) < len(matrix.attributes):
                    mask = np.fromiter((k[0] in ok for k in matrix.keys), dtype=bool, count=len(matrix.keys))
                    sims = np.where(mask, sims, -np.inf)
                top = min(CANDIDATES, len(sims))
                best = np.argpartition(-sims, top - 1)[:top]
                for i in best:
                    if np.isfinite(sims[i]):
                        file_id, seq = matrix.keys[int(i)]
                        scored.append((float(sims[i]), store_id, file_id, seq))
            scored.sort(reverse=True)
            vector_rank = [(s, f, q) for _, s, f, q in scored[:CANDIDATES]]
            text_rank: list[tuple[str, str, int]] = []
            if query.text_weight > 0 and allowed:
                live = [s for s in store_ids if s in allowed]
                text_rank = [
                    k
                    for k in await self._keyword(session, live, query.text, CANDIDATES * 2)
                    if k[1] in allowed.get(k[0], ())
                ][:CANDIDATES]
            fused: dict[tuple[str, str, int], float] = {}
            for weight, ranking in ((query.embedding_weight, vector_rank), (query.text_weight, text_rank)):
                if weight <= 0:
                    continue
                for rank, key in enumerate(ranking):
                    fused[key] = fused.get(key, 0.0) + weight / (RRF_K + rank + 1)
            best_possible = (query.embedding_weight + query.text_weight) / (RRF_K + 1)
            ranked = sorted(fused.items(), key=lambda kv: kv[1], reverse=True)
            ranked = [(k, v / best_possible) for k, v in ranked if v / best_possible >= query.score_threshold]
            ranked = ranked[: query.max_results]
            hits: list[Hit] = []
            for (store_id, file_id, seq), score in ranked:
                row = await session.get(ChunkRow, (store_id, file_id, seq))
                if row is not None:
                    hits.append(
                        Hit(
                            store_id,
                            file_id,
                            row.filename,
                            seq,
                            row.text,
                            round(min(score, 1.0), 6),
                            dict(row.attributes),
                        )
                    )
        return hits


def open_index(db: Database, *, cache_bytes: int) -> ChunkIndex:
    return SqlChunkIndex(db, cache_bytes=cache_bytes)
