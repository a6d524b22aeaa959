"""The chunk index on SQLite and on the real PostgreSQL: what a search returns, and what a
replica holds in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest

from app.services.retrieval.filters import parse_filter
from app.services.retrieval.index import ChunkIn, SearchQuery, SqlChunkIndex
from app.storage.db import Database
from app.storage.schema import Base

DIMS = 16


def unit(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).standard_normal(DIMS).astype("<f4")
    return list(vector / np.linalg.norm(vector))


def chunks(*texts: str, seed: int = 0) -> list[ChunkIn]:
    return [ChunkIn(seq=i, text=t, tokens=len(t.split()), vector=unit(seed + i)) for i, t in enumerate(texts)]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.aclose()


def query(text: str, vector: Sequence[float] | None = None, **options: Any) -> SearchQuery:
    return SearchQuery(text=text, vector=vector if vector is not None else unit(999), **options)


async def test_keyword_and_vector_sides_both_find_their_chunk(db: Database) -> None:
    index = SqlChunkIndex(db)
    await index.add(
        "vs_1",
        "file-a",
        "a.txt",
        {},
        chunks("the capital of france is paris", "bananas are yellow", "我们在北京大学学习", seed=10),
    )
    # Keyword: the words of the query, whatever the vector.
    hits = await index.search(["vs_1"], query("Which city is the capital of France?"))
    assert hits[0].text == "the capital of france is paris"
    assert hits[0].filename == "a.txt"
    # Chinese, with no spaces in the document or the query.
    hits = await index.search(["vs_1"], query("北京大学"))
    assert hits[0].text == "我们在北京大学学习"
    # Vector: the nearest chunk to the vector, whatever the words.
    hits = await index.search(["vs_1"], query("zzz", unit(11)))
    assert hits[0].text == "bananas are yellow"
    assert all(0 <= h.score <= 1 for h in hits)


async def test_a_chunk_first_on_both_sides_scores_one(db: Database) -> None:
    index = SqlChunkIndex(db)
    await index.add("vs_1", "file-a", "a.txt", {}, chunks("alpha beta", "gamma delta", seed=20))
    hits = await index.search(["vs_1"], query("gamma", unit(21)))
    assert hits[0].text == "gamma delta"
    assert hits[0].score == 1.0
    assert hits[1].score < 0.6  # found by the vector side only, and second there


async def test_ranker_none_scores_are_cosine_similarities(db: Database) -> None:
    index = SqlChunkIndex(db)
    await index.add("vs_1", "file-a", "a.txt", {}, chunks("one", "two", "three", seed=30))
    wanted = unit(31)
    hits = await index.search(["vs_1"], query("one", wanted, ranker="none"))
    assert hits[0].text == "two"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    expected = max(0.0, float(np.dot(unit(30), wanted)))
    assert next(h for h in hits if h.text == "one").score == pytest.approx(expected, abs=1e-5)
    # A threshold then reads as a similarity.
    assert [
        h.text
        for h in await index.search(["vs_1"], query("one", wanted, ranker="none", score_threshold=0.99))
    ] == ["two"]


async def test_weights_choose_the_side(db: Database) -> None:
    index = SqlChunkIndex(db)
    await index.add("vs_1", "file-a", "a.txt", {}, chunks("kiwi fruit", "plain words", seed=40))
    keyword_only = await index.search(["vs_1"], query("kiwi", unit(41), embedding_weight=0, text_weight=1))
    assert [h.text for h in keyword_only] == ["kiwi fruit"]
    vector_only = await index.search(["vs_1"], query("kiwi", unit(41), embedding_weight=1, text_weight=0))
    assert vector_only[0].text == "plain words"


async def test_adding_a_file_again_replaces_its_chunks(db: Database) -> None:
    index = SqlChunkIndex(db)
    await index.add("vs_1", "file-a", "a.txt", {}, chunks("old words here", "more old words"))
    await index.add("vs_1", "file-a", "a.txt", {}, chunks("new words"))
    assert [h.text for h in await index.file_chunks("vs_1", "file-a")] == ["new words"]
    assert await index.search(["vs_1"], query("old", embedding_weight=0, text_weight=1)) == []


async def test_filters_apply_before_ranking(db: Database) -> None:
    index = SqlChunkIndex(db)
    for n in range(5):
        texts = [f"report number {n} part {i}" for i in range(3)]
        await index.add("vs_1", f"file-{n}", f"{n}.txt", {"year": 2020 + n}, chunks(*texts, seed=100 * n))
    recent = parse_filter({"type": "gte", "key": "year", "value": 2023})
    hits = await index.search(["vs_1"], query("report", filter=recent, max_results=20))
    assert {h.file_id for h in hits} == {"file-3", "file-4"}
    assert len(hits) == 6
    assert all(h.attributes["year"] >= 2023 for h in hits)
    # New attributes are what the next search filters on.
    await index.set_attributes("vs_1", "file-0", {"year": 2030})
    hits = await index.search(["vs_1"], query("report", filter=recent, max_results=20))
    assert {h.file_id for h in hits} == {"file-0", "file-3", "file-4"}


async def test_stores_are_apart_and_removal_is_seen(db: Database) -> None:
    index = SqlChunkIndex(db)
    await index.add("vs_1", "file-a", "a.txt", {}, chunks("shared word one"))
    await index.add("vs_2", "file-b", "b.txt", {}, chunks("shared word two"))
    hits = await index.search(["vs_1"], query("shared"))
    assert [h.store_id for h in hits] == ["vs_1"]
    both = await index.search(["vs_1", "vs_2"], query("shared"))
    assert {h.store_id for h in both} == {"vs_1", "vs_2"}
    assert await index.remove_file("vs_1", "file-a") == 1
    assert await index.search(["vs_1"], query("shared")) == []
    assert await index.remove_store("vs_2") == 1
    assert await index.search(["vs_2", "vs_missing"], query("shared")) == []


@pytest.mark.parametrize(
    "text",
    [
        '"',
        'a" OR "b',
        "NEAR(a b)",
        "col:word",
        "word*",
        "^start",
        "AND OR NOT",
        "(((",
        "'; DROP TABLE x; --",
        "",
        "!!!",
    ],
)
async def test_query_syntax_is_never_passed_through(db: Database, text: str) -> None:
    index = SqlChunkIndex(db)
    await index.add("vs_1", "file-a", "a.txt", {}, chunks("a word or b and near start col"))
    hits = await index.search(["vs_1"], query(text))
    assert len(hits) <= 1  # found by its vector at most; never an error


async def test_another_replica_sees_writes(db: Database) -> None:
    writer, reader = SqlChunkIndex(db), SqlChunkIndex(db)
    await writer.add("vs_1", "file-a", "a.txt", {}, chunks("first", seed=1))
    assert [h.text for h in await reader.search(["vs_1"], query("x", unit(1), ranker="none"))] == ["first"]
    await writer.add("vs_1", "file-b", "b.txt", {}, chunks("second", seed=2))
    hits = await reader.search(["vs_1"], query("x", unit(2), ranker="none"))
    assert hits[0].text == "second"
    await writer.remove_file("vs_1", "file-a")
    hits = await reader.search(["vs_1"], query("x", unit(1), ranker="none"))
    assert [h.text for h in hits] == ["second"]


async def test_memory_is_bounded_however_many_stores_are_served(db: Database) -> None:
    vectors_per_store = 200
    bound = 3 * vectors_per_store * DIMS * 4 + 4000  # about three stores' worth
    index = SqlChunkIndex(db, cache_bytes=bound)
    for n in range(10):
        texts = [f"store {n} chunk {i}" for i in range(vectors_per_store)]
        await index.add(f"vs_{n}", "file-a", "a.txt", {}, chunks(*texts, seed=n * 1000))
    for n in range(10):
        hits = await index.search([f"vs_{n}"], query("chunk", unit(n * 1000 + 7), ranker="none"))
        assert hits[0].text == f"store {n} chunk 7"
        assert index.cached_bytes <= bound
    assert index.cached_bytes > 0
    # A store larger than the whole cache is searched, not kept.
    tiny = SqlChunkIndex(db, cache_bytes=1024)
    assert (await tiny.search(["vs_0"], query("chunk", unit(3), ranker="none")))[0].text == "store 0 chunk 3"
    assert tiny.cached_bytes == 0


async def test_tables_created_from_the_metadata_search_too(tmp_path: object) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/direct.db")
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        index = SqlChunkIndex(db)
        await index.add("vs_1", "file-a", "a.txt", {}, chunks("keyword side works"))
        hits = await index.search(["vs_1"], query("keyword", embedding_weight=0, text_weight=1))
        assert [h.text for h in hits] == ["keyword side works"]
    finally:
        await db.aclose()
