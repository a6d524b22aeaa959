"""Response cache: an exact-match answer cache for deterministic requests, as a runner step.

A request is cacheable when its answer is meant to be reproducible: temperature 0, or a seed the
client (or a preset) fixed. The key is a SHA-256 of everything that changes the output — the
model (public and upstream name, provider), the messages as the upstream sees them (after
redaction, so personal data never reaches the cache), every sampling field and the extra
parameters — and never who asked (no API key, no `user`). A randomly drawn seed is left out of
the key at temperature 0, where it changes nothing.

Answers live in-process (an LRU with a TTL) or, with `REDIS_URL`, in Redis (shared by replicas,
expiring by TTL). Streams share the cache with plain requests: a cached answer is replayed as a
stream (one text chunk per choice, then the finish and the usage), and a stream that ends well is
stored for either kind of request. Answers served by a fallback model are not stored (they are
not what the requested model would say). The cache is an optimisation: when Redis fails, the
request goes upstream as if it were a miss.

`Cache-Control: no-cache` skips the lookup (a fresh answer replaces the stored one), `no-store`
skips both; `x-cache: hit|miss|bypass` says what happened.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.clock import Clock
from app.providers.base import (
    Choice,
    Chunk,
    Completion,
    CompletionAssembler,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)
from app.services.generation.pipeline import Job, Runner
from app.settings import Settings

log = logging.getLogger("genserve.cache")

KEY_VERSION = 2
"""Bump when the key material or the stored format changes: old entries are then never read."""


class CacheStore(Protocol):
    """Where cached answers live."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: int) -> None: ...


class MemoryStore:
    """In-process LRU with a TTL: for a single instance."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class RedisStore:
    """Shared by every replica; Redis expires entries by their TTL."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}cache:"

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._prefix + key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self._redis.set(self._prefix + key, value, ex=ttl)


def cache_key(job: Job) -> str:
    """SHA-256 of everything that changes the answer, and nothing about who asked."""
    request = job.request
    sampling = request.sampling.as_dict()
    if not job.seed_fixed:
        sampling["seed"] = None  # drawn at random: it does not make answers differ at temperature 0
    material = {
        "v": KEY_VERSION,
        "model": job.model,
        "provider": job.provider.name,
        "upstream_model": request.model,
        "messages": [
            [
                m.role,
                m.content,
                [[c.id, c.name, c.arguments] for c in m.tool_calls],
                m.tool_call_id,
                m.name,
                [[i.url, i.detail] for i in m.images],
            ]
            for m in request.messages
        ],
        "sampling": sampling,
        "extra": dict(request.extra),
        "tools": [[t.name, t.description, dict(t.parameters)] for t in request.tools],
        "tool_choice": request.tool_choice
        if isinstance(request.tool_choice, str)
        else {"name": request.tool_choice.name},
        "parallel_tool_calls": request.parallel_tool_calls,
        "logprobs": request.logprobs,
    }
    if request.prompt is not None:
        material["prompt"] = request.prompt  # raw text: no chat template, a different answer
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _encode_logprobs(tokens: tuple[TokenLogprob, ...] | None) -> list[Any] | None:
    if tokens is None:
        return None
    return [[t.token, t.logprob, t.bytes, [[a.token, a.logprob, a.bytes] for a in t.top]] for t in tokens]


def _decode_logprobs(raw: list[Any] | None) -> tuple[TokenLogprob, ...] | None:
    if raw is None:
        return None

    def as_bytes(value: list[int] | None) -> tuple[int, ...] | None:
        return None if value is None else tuple(value)

    return tuple(
        TokenLogprob(token, logprob, as_bytes(b), tuple(TopLogprob(a, lp, as_bytes(ab)) for a, lp, ab in top))
        for token, logprob, b, top in raw
    )


def _encode(completion: Completion) -> bytes:
    return orjson.dumps(
        {
            "model": completion.model,
            "choices": [
                [
                    c.index,
                    c.text,
                    c.finish_reason,
                    [[t.id, t.name, t.arguments] for t in c.tool_calls],
                    _encode_logprobs(c.logprobs),
                ]
                for c in completion.choices
            ],
            "usage": [completion.usage.prompt_tokens, completion.usage.completion_tokens],
        }
    )


def _decode(raw: bytes, seed: int | None) -> Completion:
    data: dict[str, Any] = orjson.loads(raw)
    return Completion(
        model=str(data["model"]),
        choices=tuple(
            Choice(
                index=int(i),
                text=str(t),
                finish_reason=f,
                tool_calls=tuple(ToolCall(*call) for call in calls),
                logprobs=_decode_logprobs(logprobs),
            )
            for i, t, f, calls, logprobs in data["choices"]
        ),
        usage=Usage(int(data["usage"][0]), int(data["usage"][1])),
        seed=seed,
    )


class ResponseCache:
    """The runner step that answers repeated deterministic requests from `store`."""

    def __init__(self, settings: Settings, inner: Runner, store: CacheStore) -> None:
        self.enabled = settings.cache_enabled
        self.ttl = settings.cache_ttl
        self.inner = inner
        self.store = store
        self.hits = 0
        self.misses = 0
        self.errors = 0
        """Store failures (e.g. Redis down), served as misses (for metrics)."""

    @classmethod
    def build(
        cls, settings: Settings, inner: Runner, redis: Redis | None, clock: Clock = time.monotonic
    ) -> ResponseCache:
        store: CacheStore = (
            RedisStore(redis, settings.redis_prefix)
            if redis is not None
            else MemoryStore(settings.cache_max_entries, clock)
        )
        return cls(settings, inner, store)

    def cacheable(self, job: Job) -> bool:
        return self.enabled and (job.request.sampling.temperature == 0 or job.seed_fixed)

    # -- the runner protocol ----------------------------------------------------------------

    async def complete(self, job: Job) -> Completion:
        key = self._prepare(job)
        if key is None:
            return await self.inner.complete(job)
        options = job.ctx.options
        if options.cache_read and (cached := await self._lookup(job, key)) is not None:
            return cached
        requested = job.model
        completion = await self.inner.complete(job)
        if options.cache_write and job.model == requested:
            await self._keep(key, completion)
        return completion

    def stream(self, job: Job) -> AsyncGenerator[Chunk, None]:
        key = self._prepare(job)
        if key is None:
            return self.inner.stream(job)  # not cacheable: no extra step per chunk
        return self._stream(job, key)

    async def _stream(self, job: Job, key: str) -> AsyncGenerator[Chunk, None]:
        options = job.ctx.options
        cached = await self._lookup(job, key) if options.cache_read else None
        if cached is not None:
            for choice in cached.choices:
                if choice.text or choice.logprobs:
                    yield Chunk(index=choice.index, text=choice.text, logprobs=choice.logprobs)
                for n, call in enumerate(choice.tool_calls):
                    yield Chunk(
                        index=choice.index,
                        tool_calls=(ToolCallDelta(n, id=call.id, name=call.name, arguments=call.arguments),),
                    )
                yield Chunk(index=choice.index, finish_reason=choice.finish_reason)
            yield Chunk(usage=cached.usage)
            return
        requested = job.model
        parts = CompletionAssembler(logprobs=job.request.logprobs is not None)
        async with aclosing(self.inner.stream(job)) as chunks:
            async for chunk in chunks:
                parts.add(chunk)
                yield chunk
        n = job.request.sampling.n
        if not options.cache_write or job.model != requested or parts.usage is None:
            return
        if not parts.all_finished(n):
            return  # a choice never finished: not an answer worth repeating
        await self._keep(key, parts.completion(job.request.model, n))

    # -- helpers ----------------------------------------------------------------------------

    def _prepare(self, job: Job) -> str | None:
        """The job's key, or None when the cache has no say; records `x-cache`."""
        if not self.cacheable(job):
            return None
        options = job.ctx.options
        if not options.cache_read:
            options.record_cache("bypass")
            job.metadata["cache"] = "bypass"
            return cache_key(job) if options.cache_write else None
        return cache_key(job)

    async def _lookup(self, job: Job, key: str) -> Completion | None:
        options = job.ctx.options
        try:
            raw = await self.store.get(key)
        except (RedisError, OSError) as exc:
            self.errors += 1
            log.warning("response cache unavailable", extra={"error": type(exc).__name__})
            raw = None
        if raw is None:
            self.misses += 1
            options.record_cache("miss")
            job.metadata["cache"] = "miss"
            return None
        self.hits += 1
        options.record_cache("hit")
        job.metadata["cache"] = "hit"
        return _decode(raw, job.request.sampling.seed)

    async def _keep(self, key: str, completion: Completion) -> None:
        try:
            await self.store.set(key, _encode(completion), self.ttl)
        except (RedisError, OSError) as exc:
            self.errors += 1
            log.warning("response cache unavailable", extra={"error": type(exc).__name__})
