"""The chunk index: keyword and vector search over vector stores' chunks, fused.

Keyword side: SQLite FTS5's BM25 on the segmented words, or PostgreSQL's full-text search
(`ts_rank_cd` over `to_tsvector('simple', words)`) when the database is PostgreSQL. Vector side:
exact cosine similarity with numpy over each store's matrix, which replicas cache within a
byte bound and reload when the store's version changes. The two rankings are fused by weighted
reciprocal rank fusion (k = 60). `ChunkIndex` is the seam where a vector engine (pgvector) can
replace the SQL implementation.

Scores are in [0, 1]. Hybrid (`auto`, `default-2024-11-15`): a chunk's fused score
sum(weight / (60 + rank)) divided by the best possible one, (embedding_weight + text_weight) / 61,
so 1.0 is a chunk ranked first by both sides and a chunk found by one side only scores at most
that side's share of the weights. `none`: no fusion, the cosine similarity of the vectors
(clipped at 0), so `score_threshold` then reads as a similarity.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy import and_, delete, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.retrieval.filters import Filter, matches
from app.services.retrieval.segment import words
from app.storage.chunks import ChunkRow, StoreVersionRow
from app.storage.db import Database

if TYPE_CHECKING:
    # numpy (70 MB) loads when a store is first written or searched, not when a server starts.
    import numpy as np

RRF_K = 60
CANDIDATES = 100
"""Candidates each side contributes to the fusion."""
KEYWORD_MATCHES = 5_000
"""Chunks the keyword side ranks at most (SQLite): a query's words are taken rarest first while
the chunks holding them add up to no more than this (the rarest is always taken). The words left
out are the most common ones, to which BM25 gives almost no weight; ranking every chunk holding
them is what made a search of a 100k-chunk store take 350 ms."""


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
    """One store's vectors, row i being chunk (files[file_of[i]], seqs[i])."""

    version: int
    files: list[str]
    attributes: list[dict[str, Any]]
    """Per file, in the order of `files`."""
    file_of: np.ndarray
    seqs: np.ndarray
    vectors: np.ndarray
    nbytes: int = 0

    def __post_init__(self) -> None:
        # What the cache holds for the store: the arrays, plus the files' ids and attributes.
        per_file = sum(
            120 + len(f) + len(json.dumps(a)) for f, a in zip(self.files, self.attributes, strict=True)
        )
        self.nbytes = int(self.vectors.nbytes + self.file_of.nbytes + self.seqs.nbytes) + per_file


def _terms(query: str) -> list[str]:
    return [t for t in dict.fromkeys(w.replace('"', "") for w in words(query)) if t][:64]


def _fts_query(terms: Sequence[str]) -> str:
    """An FTS5 MATCH string of the words, each quoted (no user syntax gets through)."""
    return " OR ".join(f'"{t}"' for t in terms)


class SqlChunkIndex:
    """The index in the service's own database."""

    def __init__(self, db: Database, *, cache_bytes: int = 512 << 20) -> None:
        self._db = db
        self._cache: OrderedDict[str, _Matrix] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0

    @property
    def cached_bytes(self) -> int:
        """Bytes of vectors (and their keys) this replica holds now: at most `cache_bytes`."""
        return self._cached_bytes

    def _forget(self, store_id: str) -> None:
        gone = self._cache.pop(store_id, None)
        if gone is not None:
            self._cached_bytes -= gone.nbytes

    def _keep(self, store_id: str, matrix: _Matrix) -> None:
        self._forget(store_id)
        if matrix.nbytes > self._cache_bytes:
            return  # larger than the whole cache: used for this search, then dropped
        self._cache[store_id] = matrix
        self._cached_bytes += matrix.nbytes
        while self._cached_bytes > self._cache_bytes:
            _, oldest = self._cache.popitem(last=False)
            self._cached_bytes -= oldest.nbytes

    async def _bump(self, session: AsyncSession, store_id: str) -> None:
        # One statement (an upsert), so two replicas adding a store's first files at once do
        # not both insert version 1.
        insert = sqlite_insert if self._db.is_sqlite else pg_insert
        statement = insert(StoreVersionRow).values(store_id=store_id, version=1)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[StoreVersionRow.store_id],
                set_={"version": StoreVersionRow.version + 1},
            )
        )

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
        import numpy as np

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
        self._forget(store_id)
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
        import numpy as np

        cached = self._cache.get(store_id)
        if cached is not None and cached.version == version:
            self._cache.move_to_end(store_id)
            return cached
        query = select(ChunkRow.file_id, ChunkRow.seq, ChunkRow.vector, ChunkRow.attributes).where(
            ChunkRow.store_id == store_id
        )
        files: dict[str, int] = {}
        attributes: list[dict[str, Any]] = []
        file_of: list[int] = []
        seqs: list[int] = []
        blobs: list[bytes] = []
        dims = 0
        for file_id, seq, vector, attrs in (await session.execute(query)).all():
            if file_id not in files:
                files[file_id] = len(files)
                attributes.append(dict(attrs or {}))
            dims = dims or len(vector) // 4
            if len(vector) != 4 * dims:
                continue  # another embedding model's vector: it cannot be compared with these
            file_of.append(files[file_id])
            seqs.append(seq)
            blobs.append(vector)
        vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dims)
        matrix = _Matrix(
            version,
            list(files),
            attributes,
            np.asarray(file_of, dtype=np.int32),
            np.asarray(seqs, dtype=np.int32),
            vectors,
        )
        self._keep(store_id, matrix)
        return matrix

    async def _uncommon(self, session: AsyncSession, terms: list[str]) -> list[str]:
        """The rarest of `terms` within KEYWORD_MATCHES chunks (FTS5's vocabulary table counts
        them); words in no chunk are dropped."""
        if not terms:
            return []
        marks = ", ".join(f":t{i}" for i in range(len(terms)))
        counts: dict[str, int] = dict(
            (
                await session.execute(
                    text(f"SELECT term, doc FROM vector_store_chunks_fts_vocab WHERE term IN ({marks})"),
                    {f"t{i}": t for i, t in enumerate(terms)},
                )
            ).all()
        )
        kept: list[str] = []
        total = 0
        for term in sorted(counts, key=counts.__getitem__):
            total += counts[term]
            if kept and total > KEYWORD_MATCHES:
                break
            kept.append(term)
        return kept

    async def _keyword(
        self, session: AsyncSession, store_ids: Sequence[str], query: str, limit: int
    ) -> list[tuple[str, str, int]]:
        if self._db.is_sqlite:
            terms = await self._uncommon(session, _terms(query))
            if not terms:
                return []
            match = _fts_query(terms)
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
        if not store_ids or query.max_results <= 0:
            return []
        import numpy as np

        store_ids = list(dict.fromkeys(store_ids))
        wanted = np.asarray(query.vector, dtype="<f4")
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
                ok = [
                    i
                    for i, attrs in enumerate(matrix.attributes)
                    if query.filter is None or matches(query.filter, attrs)
                ]
                allowed[store_id] = {matrix.files[i] for i in ok}
                if not ok or not len(matrix.seqs) or matrix.vectors.shape[1] != wanted.shape[0]:
                    continue
                sims = matrix.vectors @ wanted
                if len(ok) < len(matrix.files):
                    sims = np.where(np.isin(matrix.file_of, ok), sims, -np.inf)
                top = min(CANDIDATES, len(sims))
                best = np.argpartition(-sims, top - 1)[:top]
                for i in best:
                    if np.isfinite(sims[i]):
                        file_id = matrix.files[int(matrix.file_of[i])]
                        scored.append((float(sims[i]), store_id, file_id, int(matrix.seqs[i])))
            scored.sort(reverse=True)
            scored = scored[:CANDIDATES]
            if query.ranker == "none":
                ranked = [((s, f, q), max(0.0, sim)) for sim, s, f, q in scored]
            else:
                ranked = await self._fuse(session, store_ids, query, scored, allowed)
            ranked = [(k, v) for k, v in ranked if v >= query.score_threshold][: query.max_results]
            rows = await self._rows(session, [k for k, _ in ranked])
        return [
            Hit(s, f, row.filename, q, row.text, round(min(score, 1.0), 6), dict(row.attributes))
            for (s, f, q), score in ranked
            if (row := rows.get((s, f, q))) is not None
        ]

    async def _fuse(
        self,
        session: AsyncSession,
        store_ids: Sequence[str],
        query: SearchQuery,
        scored: list[tuple[float, str, str, int]],
        allowed: dict[str, set[str]],
    ) -> list[tuple[tuple[str, str, int], float]]:
        """Weighted reciprocal rank fusion of the vector ranking and the keyword ranking."""
        vector_rank = [(s, f, q) for _, s, f, q in scored] if query.embedding_weight > 0 else []
        text_rank: list[tuple[str, str, int]] = []
        if query.text_weight > 0 and allowed:
            live = [s for s in store_ids if allowed.get(s)]
            found = await self._keyword(session, live, query.text, CANDIDATES * 2) if live else []
            text_rank = [k for k in found if k[1] in allowed.get(k[0], ())][:CANDIDATES]
        fused: dict[tuple[str, str, int], float] = {}
        for weight, ranking in ((query.embedding_weight, vector_rank), (query.text_weight, text_rank)):
            if weight <= 0:
                continue  # a side turned off contributes no candidates either
            for rank, key in enumerate(ranking):
                fused[key] = fused.get(key, 0.0) + weight / (RRF_K + rank + 1)
        best_possible = (query.embedding_weight + query.text_weight) / (RRF_K + 1)
        if best_possible <= 0:
            return []
        ranked = sorted(fused.items(), key=lambda kv: kv[1], reverse=True)
        return [(k, v / best_possible) for k, v in ranked]

    async def _rows(
        self, session: AsyncSession, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], ChunkRow]:
        """The chunks of `keys`, in one query."""
        if not keys:
            return {}
        where = or_(
            *(and_(ChunkRow.store_id == s, ChunkRow.file_id == f, ChunkRow.seq == q) for s, f, q in keys)
        )
        rows = (await session.execute(select(ChunkRow).where(where))).scalars()
        return {(r.store_id, r.file_id, r.seq): r for r in rows}


def open_index(db: Database, *, cache_bytes: int) -> ChunkIndex:
    return SqlChunkIndex(db, cache_bytes=cache_bytes)
