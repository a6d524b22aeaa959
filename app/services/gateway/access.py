"""Who may generate, how much, and what it cost: the job hook that applies keys, limits and usage.

Every generating endpoint runs its jobs through `GenerationService`, so this hook sees them all
(generate, chat, presets, conversations) without any of them knowing. The caller's identity
arrives on the job, as `job.ctx.caller`.

A job's life, for its key:
  on_start   may it use this model and preset? (403) — reserve 1 request and
             prompt estimate + max_tokens × n tokens (429 when a limit is reached)
  on_finish  settle the reservation with the real usage — streams, and streams cut short, too —
             and count the usage and its estimated cost (under the model that served it; an
             answer from the response cache counts its tokens, as the client was told, at no cost)
  on_error   the upstream or the service failed: the tokens are released (the request still
             counts against requests per minute). The client went away before any output:
             the prompt is billed, since the upstream has already read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.clock import Clocks
from app.errors import (
    AuthenticationFailed,
    ClientDisconnected,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
)
from app.providers.base import Usage, prompt_messages
from app.services.gateway.keys import KeyStore
from app.services.gateway.limits import (
    Concurrency,
    Limiter,
    LimitReached,
    MemoryConcurrency,
    MemoryLimiter,
    RedisConcurrency,
    RedisLimiter,
    Reservation,
)
from app.services.gateway.usage import UsageRecorder, cost
from app.services.generation.caller import ANONYMOUS, Client, Limits
from app.services.generation.context import RequestContext
from app.services.generation.pipeline import Job, JobHook, Outcome, Prepaid
from app.settings import Settings
from app.storage.db import Database
from app.storage.spool import Spool

log = logging.getLogger("genserve.access")


@dataclass(slots=True)
class _Open:
    client: Client
    reservation: Reservation | None
    slot: bool = False
    """It holds one of the key's `max_concurrent` slots."""


_GONE = (asyncio.CancelledError, GeneratorExit, ClientDisconnected)


class AccessHook(JobHook):
    """Applies the caller's permissions and limits to every job and records its usage."""

    def __init__(
        self,
        settings: Settings,
        limiter: Limiter,
        usage: UsageRecorder,
        concurrency: Concurrency | None = None,
    ) -> None:
        self._keys_required = settings.auth_mode == "keys"
        self._limiter = limiter
        self._concurrency: Concurrency = concurrency or MemoryConcurrency()
        self._usage = usage
        self._open: dict[str, _Open] = {}

    async def on_start(self, job: Job) -> None:
        client = job.ctx.caller
        if self._keys_required and client is ANONYMOUS:  # a job without a key: fail closed
            raise AuthenticationFailed("An API key is required.", code="missing_api_key")
        if client.allowed_models is not None and job.model not in client.allowed_models:
            raise PermissionDenied(
                f"This API key may not use the model '{job.model}'.", param="model", code="model_not_allowed"
            )
        job.allowed_models = client.allowed_models  # fallbacks, too, stay within the key's models
        if job.preset is not None:
            client.require_preset(job.preset)
        slot = False
        if client.limits.max_concurrent is not None and job.prepaid is None:
            await self._take_slot(client)
            slot = True
        try:
            reservation = await self._reserve(job, client)
        except BaseException:
            if slot:
                await self._give_slot(client)
            raise
        self._open[job.id] = _Open(client, reservation, slot)

    async def _reserve(self, job: Job, client: Client) -> Reservation | None:
        reservation = None
        if client.limits.meters and job.prepaid is None:  # a prepaid job draws on its request's
            s = job.request.sampling
            tokens = 0
            if client.limits.counts_tokens:
                tokens = self._prompt_tokens(job) + s.max_tokens * s.n
            try:
                reservation, snapshot = await self._limiter.reserve(client.key_id, client.limits, tokens)
            except RedisError as exc:  # limits that cannot be checked are not skipped
                log.error("rate limiter unavailable", exc_info=exc)
                raise ServiceUnavailable("Rate limits cannot be checked right now.", retry_after=1) from exc
            job.ctx.headers.update(snapshot.headers())
        return reservation

    async def _take_slot(self, client: Client) -> None:
        limit = client.limits.max_concurrent
        assert limit is not None
        try:
            admitted = await self._concurrency.acquire(client.key_id, limit)
        except RedisError as exc:
            log.error("concurrency limit unavailable", exc_info=exc)
            raise ServiceUnavailable("Rate limits cannot be checked right now.", retry_after=1) from exc
        if not admitted:
            raise LimitReached(
                f"This API key already has {limit} generation{'s' if limit > 1 else ''} in flight "
                "(its max_concurrent); try again when one finishes.",
                limit="max_concurrent",
                code="too_many_concurrent_requests",
                retry_after=1,
            )

    async def _give_slot(self, client: Client) -> None:
        try:
            await self._concurrency.release(client.key_id)
        except Exception:  # the count's lease lapses on its own
            log.error("releasing a concurrency slot failed", exc_info=True)

    async def on_finish(self, outcome: Outcome) -> None:
        opened = self._open.pop(outcome.job.id, None)
        if opened is None:
            return
        usage = outcome.completion.usage
        if opened.slot:
            await self._give_slot(opened.client)
        await self._settle(opened, usage.total_tokens)
        if outcome.job.prepaid is not None:
            outcome.job.prepaid.used += usage.total_tokens
        self._record(opened.client, outcome.job, usage)
        await self._maybe_flush()

    async def on_error(self, job: Job, exc: BaseException) -> None:
        opened = self._open.pop(job.id, None)
        if opened is None:
            return
        if opened.slot:
            await self._give_slot(opened.client)
        if isinstance(exc, _GONE):
            usage = Usage(self._prompt_tokens(job), 0)
            await self._settle(opened, usage.total_tokens)
            if job.prepaid is not None:
                job.prepaid.used += usage.total_tokens
            self._record(opened.client, job, usage)
            await self._maybe_flush()
        else:
            await self._settle(opened, 0)

    async def prepay(self, ctx: RequestContext, tokens: int) -> Prepaid | None:
        """Reserve a multi-job request's tokens (and one request) against the caller's limits,
        all at once: 429 before any of its jobs runs when the key cannot afford them all."""
        client = ctx.caller
        if self._keys_required and client is ANONYMOUS:
            raise AuthenticationFailed("An API key is required.", code="missing_api_key")
        if not client.limits.meters:
            return None
        try:
            reservation, snapshot = await self._limiter.reserve(
                client.key_id, client.limits, tokens if client.limits.counts_tokens else 0
            )
        except RedisError as exc:
            log.error("rate limiter unavailable", exc_info=exc)
            raise ServiceUnavailable("Rate limits cannot be checked right now.", retry_after=1) from exc
        ctx.headers.update(snapshot.headers())
        opened = _Open(client, reservation)

        async def release(used: int) -> None:
            await self._settle(opened, used)

        return Prepaid(tokens, release=release)

    def _prompt_tokens(self, job: Job) -> int:
        if job.prompt_tokens is not None:
            return job.prompt_tokens
        return job.provider.count_tokens(job.request.model, prompt_messages(job.request))

    async def _settle(self, opened: _Open, used: int) -> None:
        if opened.reservation is None:
            return
        try:
            await self._limiter.settle(opened.reservation, used)
        except Exception:  # the answer is already out; losing one settlement must not fail it
            log.error("settling a rate-limit reservation failed", exc_info=True)

    def _record(self, client: Client, job: Job, usage: Usage) -> None:
        # `job.model` and `job.route` are the model that served (a fallback, if one did), so the
        # price is the one actually paid; an answer from the response cache paid none.
        spent = 0.0 if job.metadata.get("cache") == "hit" else cost(job.route, usage)
        self._usage.add(client.key_id, job.model, usage, spent)

    async def _maybe_flush(self) -> None:
        if self._usage.flush_seconds == 0:
            try:
                await self._usage.flush()
            except Exception:
                log.warning("writing usage failed; will retry", exc_info=True)


_AUTH_FAILURES = "auth-failures:"


@dataclass(slots=True)
class Access:
    """Keys, limits and usage, as the lifespan builds them."""

    keys: KeyStore
    limiter: Limiter
    usage: UsageRecorder
    hook: AccessHook
    auth_failures_per_minute: int = 20
    """Failed authentications one client address may make per minute before it gets 429."""

    suspects: dict[str, None] = field(default_factory=dict)
    """Addresses that failed to authenticate on this replica (oldest forgotten past 10,000):
    only their attempts pay for a look at the shared failure count first."""

    async def check_address(self, address: str) -> None:
        """429 when `address` has used its budget of failed authentications: while blocked, even
        a right key is not checked, so a lucky guess cannot be told apart."""
        if address not in self.suspects:
            return
        reservation = await self._reserve_failure(address)
        with contextlib.suppress(Exception):
            await self.limiter.settle(reservation, 0)  # a look, not a failure

    async def count_failure(self, address: str) -> None:
        """One failed authentication from `address` (429 instead of 401 once over budget)."""
        self.suspects[address] = None
        if len(self.suspects) > 10_000:
            del self.suspects[next(iter(self.suspects))]
        await self._reserve_failure(address)

    async def _reserve_failure(self, address: str) -> Reservation:
        limits = Limits(tokens_per_minute=self.auth_failures_per_minute)
        try:
            reservation, _ = await self.limiter.reserve(_AUTH_FAILURES + address, limits, 1)
        except RedisError as exc:
            log.error("rate limiter unavailable", exc_info=exc)
            raise ServiceUnavailable("Rate limits cannot be checked right now.", retry_after=1) from exc
        except RateLimited as exc:
            raise RateLimited(
                "Too many failed authentication attempts from this address; try again later.",
                code="too_many_failed_attempts",
                retry_after=exc.retry_after if exc.retry_after is not None else 60,
            ) from None
        return reservation

    async def count_request(self, client: Client) -> None:
        """One request against the key's request limit, for a route that runs no job (the
        access hook meters those): 429 when the key has no request left."""
        if not client.limits.requests_per_minute:
            return
        limits = Limits(requests_per_minute=client.limits.requests_per_minute)
        try:
            await self.limiter.reserve(client.key_id, limits, 0)
        except RedisError as exc:
            log.error("rate limiter unavailable", exc_info=exc)
            raise ServiceUnavailable("Rate limits cannot be checked right now.", retry_after=1) from exc


@contextlib.asynccontextmanager
async def open_access(
    settings: Settings,
    db: Database,
    redis: Redis | None,
    clocks: Clocks | None = None,
    spool: Spool | None = None,
) -> AsyncIterator[Access]:
    """Build keys, limits and usage; at exit, stop the usage writer and write what is pending."""
    clocks = clocks or Clocks()
    keys = KeyStore(
        db,
        redis,
        settings.redis_prefix,
        settings.key_cache_seconds,
        stale_seconds=settings.key_stale_seconds,
        clock=clocks.monotonic,
        wall=clocks.wall,
    )
    limiter: Limiter = (
        RedisLimiter(redis, settings.redis_prefix, clocks.wall)
        if redis is not None
        else MemoryLimiter(clocks.wall)
    )
    usage = UsageRecorder(db, settings.usage_flush_seconds, clocks, spool=spool)
    # A slot a crashed replica never gave back is freed once no generation could still be running.
    concurrency: Concurrency = (
        RedisConcurrency(redis, settings.redis_prefix, lease=settings.upstream_deadline + 60)
        if redis is not None
        else MemoryConcurrency()
    )
    access = Access(
        keys=keys,
        limiter=limiter,
        usage=usage,
        hook=AccessHook(settings, limiter, usage, concurrency),
        auth_failures_per_minute=settings.auth_failures_per_minute,
    )
    task = asyncio.create_task(usage.run(), name="usage-writer") if settings.usage_flush_seconds > 0 else None
    try:
        yield access
    finally:
        await usage.aclose(task)
