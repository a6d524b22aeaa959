"""The chunk index on both engines: the keyword side (FTS5 / PostgreSQL full text on segmented
words) finds Chinese and English words, the vector side ranks by cosine, fusion weights move the
order, filters narrow by attributes, replacing a file's chunks keeps one copy, and the vector
cache stays within its byte bound however many stores are searched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from app.services.retrieval.filters import parse_filter
from app.services.retrieval.index import ChunkIn, SearchQuery, SqlChunkIndex
from app.storage.db import Database

DIMS = 8


def unit(*hot: int) -> list[float]:
    v = np.zeros(DIMS, dtype="f4")
    for i in hot:
        v[i] = 1.0
    return list(v / np.linalg.norm(v))


@pytest.fixture
async def index(database_url: str) -> AsyncIterator[SqlChunkIndex]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield SqlChunkIndex(db, cache_bytes=4096)
    finally:
        await db.aclose()


async def fill(index: SqlChunkIndex, store: str = "vs_1") -> None:
    await index.add(
        store,
        "file-returns",
        "returns.md",
        {"lang": "en"},
        [
            ChunkIn(0, "Jackets may be returned within 30 days.", 9, unit(0)),
            ChunkIn(1, "Refunds reach the card in 5 days.", 8, unit(1)),
        ],
    )
    await index.add(
        store,
        "file-warranty",
        "warranty.txt",
        {"lang": "zh"},
        [ChunkIn(0, "电子产品享受两年保修。", 8, unit(2))],
    )


async def test_keyword_side_finds_english_and_chinese_words(index: SqlChunkIndex) -> None:
    await fill(index)
    for text, expected in (
        ("jackets", "file-returns"),
        ("保修", "file-warranty"),
        ("refunds card", "file-returns"),
    ):
        hits = await index.search(
            ["vs_1"], SearchQuery(text=text, vector=unit(7), embedding_weight=0, text_weight=1)
        )
        assert hits[0].file_id == expected, (text, hits)
    assert (
        await index.search(
            ["vs_1"], SearchQuery(text='" OR *', vector=unit(7), embedding_weight=0, text_weight=1)
        )
        == []
    )


async def test_vector_side_and_fusion_weights(index: SqlChunkIndex) -> None:
    await fill(index)
    by_vector = await index.search(
        ["vs_1"], SearchQuery(text="jackets", vector=unit(2), embedding_weight=1, text_weight=0)
    )
    assert by_vector[0].file_id == "file-warranty"
    assert by_vector[0].score == 1.0
    by_text = await index.search(
        ["vs_1"], SearchQuery(text="jackets", vector=unit(2), embedding_weight=0.2, text_weight=1)
    )
    assert by_text[0].text.startswith("Jackets")
    assert all(0 <= h.score <= 1 for h in by_text)
    strict = await index.search(["vs_1"], SearchQuery(text="jackets", vector=unit(2), score_threshold=0.6))
    assert len(strict) < len(by_text)


async def test_filters_replacement_and_removal(index: SqlChunkIndex) -> None:
    await fill(index)
    zh = parse_filter({"type": "eq", "key": "lang", "value": "zh"})
    hits = await index.search(["vs_1"], SearchQuery(text="jackets", vector=unit(0), filter=zh))
    assert {h.file_id for h in hits} == {"file-warranty"}
    await fill(index)  # ingested again: one copy
    assert len(await index.file_chunks("vs_1", "file-returns")) == 2
    await index.set_attributes("vs_1", "file-returns", {"lang": "zh"})
    hits = await index.search(["vs_1"], SearchQuery(text="jackets", vector=unit(0), filter=zh))
    assert "file-returns" in {h.file_id for h in hits}
    assert await index.remove_file("vs_1", "file-returns") == 2
    hits = await index.search(["vs_1"], SearchQuery(text="jackets", vector=unit(0)))
    assert {h.file_id for h in hits} == {"file-warranty"}
    assert await index.remove_store("vs_1") == 1
    assert await index.search(["vs_1"], SearchQuery(text="保修", vector=unit(2))) == []


async def test_the_vector_cache_stays_within_its_bound(index: SqlChunkIndex) -> None:
    for n in range(20):
        await fill(index, f"vs_{n}")
        await index.search([f"vs_{n}"], SearchQuery(text="x", vector=unit(0)))
    cached = sum(m.nbytes for m in index._cache.values())
    assert cached <= 4096
    assert len(index._cache) < 20
