"""One file's way into a store's index: extract its text, chunk it, embed the chunks (as
background work, behind interactive requests) and hand them to the index."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.providers.base import Embedder
from app.services.retrieval.chunking import chunk_text
from app.services.retrieval.extract import ExtractLimits, extract_text
from app.services.retrieval.index import ChunkIn, ChunkIndex

EMBED_BATCH = 16
"""Chunks per embedding call: the lease is renewed between calls."""


@dataclass(frozen=True, slots=True)
class IngestJob:
    store_id: str
    file_id: str
    filename: str
    content_type: str | None
    attributes: dict[str, Any]
    max_tokens: int
    overlap: int


async def ingest(
    job: IngestJob,
    content: bytes,
    *,
    embedder: Embedder,
    index: ChunkIndex,
    limits: ExtractLimits,
    heartbeat: Callable[[], Awaitable[None]],
) -> int:
    """Index `content` for `job`; returns the bytes the store now uses for it (the chunks' text
    and vectors). Extraction errors propagate (`ExtractionError`, with its OpenAI code)."""
    extracted = await extract_text(content, job.filename, job.content_type, limits=limits)
    pieces = chunk_text(extracted.text, max_tokens=job.max_tokens, overlap=job.overlap)
    chunks: list[ChunkIn] = []
    for start in range(0, len(pieces), EMBED_BATCH):
        batch: Sequence[Any] = pieces[start : start + EMBED_BATCH]
        vectors = await embedder.embed([p.text for p in batch], kind="passage", priority="background")
        chunks.extend(
            ChunkIn(seq=start + n, text=p.text, tokens=p.tokens, vector=v)
            for n, (p, v) in enumerate(zip(batch, vectors.vectors, strict=True))
        )
        await heartbeat()
    await index.add(job.store_id, job.file_id, job.filename, job.attributes, chunks)
    return sum(len(c.text.encode()) + 4 * len(c.vector) for c in chunks)
