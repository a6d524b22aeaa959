"""Resilience: retries with backoff, fallback models, a circuit breaker per upstream model and a
concurrency cap per provider — one runner around the providers.

One request has one retry budget (`upstream_max_retries` retries) and one deadline
(`upstream_deadline`) for everything it tries. The requested model is tried first and retried on
transient failures (timeouts, dropped connections, 429, 5xx, garbled answers) with exponential
backoff and jitter, or after the upstream's `Retry-After`. When it keeps failing, its circuit is
open, or it is too busy, each of `ModelRoute.fallbacks` gets one attempt, plus whatever retries
are left — a fallback never restarts the budget. A stream is retried only until its first chunk:
after that the client has seen text, and a failure ends the stream with an error event.

Upstream-caused failures (not the client's bad requests) count against the circuit of the model
that failed: `circuit_failure_threshold` of them in a row open it for `circuit_cooldown` seconds,
during which requests skip it (to a fallback) or fail fast with 503; then one probe request is let
through, and its success closes the circuit again. Circuits live in the process (each replica
learns about an upstream on its own).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from app.errors import (
    AppError,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from app.providers.base import Chunk, Completion, GenerationRequest, Provider, prompt_messages
from app.services.generation.pipeline import Job
from app.settings import ModelRoute, Settings

log = logging.getLogger("genserve.resilience")
T = TypeVar("T")

CircuitState = Literal["closed", "open", "half_open"]

FALLBACK_HEADER = "x-genserve-fallback"
"""Response header naming the fallback route that answered (absent when the requested one did)."""


class CircuitBreaker:
    """closed → (threshold consecutive failures) → open → (cool-down) → half_open: one probe;
    its success closes the circuit, its failure opens it again."""

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._state: CircuitState = "closed"
        self._probing = False
        self.failures = 0
        """Consecutive failures so far."""
        self.opened_at = 0.0
        self.opened_total = 0
        """How many times the circuit opened (for metrics)."""

    @property
    def state(self) -> CircuitState:
        if self._state == "open" and self._clock() - self.opened_at >= self.cooldown:
            return "half_open"
        return self._state

    def retry_after(self) -> float:
        """Seconds until the circuit lets a probe through."""
        return max(0.0, self.cooldown - (self._clock() - self.opened_at))

    def allow(self) -> bool:
        """May a request be sent now? In half_open, only the one probe may."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._state = "half_open"
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._state = "closed"
        self._probing = False
        self.failures = 0

    def record_failure(self) -> None:
        self.failures += 1
        if self._state == "half_open" or (self._state == "closed" and self.failures >= self.threshold):
            self._state = "open"
            self.opened_at = self._clock()
            self.opened_total += 1
        self._probing = False

    def release(self) -> None:
        """An admitted request ended without a verdict (cancelled): let another probe try."""
        self._probing = False


class ConcurrencyCap:
    """At most `limit` requests in flight to one provider; the next waits up to `wait` seconds."""

    def __init__(self, limit: int, wait: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.wait = wait
        self._clock = clock
        self._semaphore = asyncio.Semaphore(limit) if limit > 0 else None
        self.in_flight = 0
        self.rejected_total = 0
        """Requests turned away because every slot stayed busy (for metrics)."""

    async def acquire(self, provider: str, deadline: float) -> None:
        """Take a slot (give it back with `release`), or raise 503 when none frees up in time."""
        semaphore = self._semaphore
        if semaphore is None:
            pass
        elif not semaphore.locked():
            # A free slot: taken at once, without arming a timer (most requests, on the hot path).
            await semaphore.acquire()
        else:
            try:
                async with asyncio.timeout(max(0.0, min(self.wait, deadline - self._clock()))):
                    await semaphore.acquire()
            except TimeoutError:
                self.rejected_total += 1
                raise ServiceUnavailable(
                    f"Too many requests in flight to the '{provider}' provider; try again shortly.",
                    code="upstream_busy",
                    retry_after=1.0,
                ) from None
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        if self._semaphore is not None:
            self._semaphore.release()


@dataclass(slots=True)
class Budget:
    """What one request may still spend, across the requested model and its fallbacks."""

    retries_left: int
    deadline: float
    """The monotonic clock's reading after which nothing more is attempted."""
    clock: Callable[[], float]
    retries: int = 0
    """Retries spent so far."""

    def remaining(self) -> float:
        return self.deadline - self.clock()


@dataclass(slots=True)
class Candidate:
    """A model that may serve the job: the requested one or a fallback, with its own request."""

    name: str
    route: ModelRoute
    provider: Provider
    request: GenerationRequest

    @property
    def upstream(self) -> str:
        """The circuit's key: one circuit per upstream model of a provider."""
        return f"{self.provider.name}:{self.request.model}"


def _is_upstream_failure(exc: BaseException) -> bool:
    """Failures that say the upstream is unwell (they count against its circuit)."""
    return isinstance(exc, UpstreamError | UpstreamTimeout | RateLimited)


def _may_fall_back(exc: BaseException) -> bool:
    """Failures another model may not have: the upstream's, or a busy or open one. A client's
    own mistakes (400, 404) would fail on any model, so they are returned at once."""
    return _is_upstream_failure(exc) or isinstance(exc, ServiceUnavailable)


class Resilience:
    """The runner that retries, falls back, breaks circuits and caps concurrency."""

    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._providers = providers
        self._table = settings.model_table
        self._clock = clock
        self.circuits: dict[str, CircuitBreaker] = {}
        """Circuit per upstream model (`provider:model`), created on first use."""
        self.caps: dict[str, ConcurrencyCap] = {
            name: ConcurrencyCap(settings.upstream_max_concurrency, settings.upstream_queue_timeout, clock)
            for name in providers
        }
        """Concurrency cap per provider."""
        self.retries_total = 0
        self.fallbacks_total = 0
        """Requests served by a fallback model (for metrics)."""

    def circuit(self, upstream: str) -> CircuitBreaker:
        circuit = self.circuits.get(upstream)
        if circuit is None:
            circuit = CircuitBreaker(
                self._settings.circuit_failure_threshold, self._settings.circuit_cooldown, self._clock
            )
            self.circuits[upstream] = circuit
        return circuit

    # -- the runner protocol ----------------------------------------------------------------

    async def complete(self, job: Job) -> Completion:
        async def attempt(candidate: Candidate) -> Completion:
            completion = await candidate.provider.complete(candidate.request)
            self.circuit(candidate.upstream).record_success()
            return completion

        async with self._serve(job, attempt) as (_, completion):
            return completion

    async def stream(self, job: Job) -> AsyncGenerator[Chunk, None]:
        async def attempt(candidate: Candidate) -> tuple[AsyncGenerator[Chunk, None], Chunk | None]:
            chunks = candidate.provider.stream(candidate.request)
            try:
                return chunks, await anext(chunks)
            except StopAsyncIteration:
                return chunks, None
            except BaseException:
                await chunks.aclose()
                raise

        # Only the opening (up to the first chunk) is retried or falls back; the slot under the
        # concurrency cap is held until the stream ends.
        async with self._serve(job, attempt) as (candidate, (chunks, first)):
            circuit = self.circuit(candidate.upstream)
            async with aclosing(chunks):
                try:
                    if first is not None:
                        yield first
                        async for chunk in chunks:
                            yield chunk
                except BaseException as exc:
                    if _is_upstream_failure(exc):
                        circuit.record_failure()
                    else:
                        circuit.release()
                    raise
                circuit.record_success()

    # -- the policy -------------------------------------------------------------------------

    def candidates(self, job: Job) -> Iterator[Candidate]:
        """The requested model, then each fallback that can take this request (worked out only
        when it is needed: most requests never get that far)."""
        yield Candidate(job.model, job.route, job.provider, job.request)
        seen = {job.model}
        allowed = job.allowed_models
        for name in job.route.fallbacks:
            if name not in seen and (allowed is None or name in allowed):
                seen.add(name)
                candidate = self._fallback(job, name)
                if candidate is not None:
                    yield candidate

    def _fallback(self, job: Job, name: str) -> Candidate | None:
        route = self._table[name]
        provider = self._providers[route.provider]
        request = job.request
        if any(param not in provider.extra_params for param in request.extra):
            return None  # it could not honour the request as asked
        if not route.vision and any(m.images for m in request.messages):
            return None
        model = route.upstream_model or name
        try:
            prompt_tokens = provider.count_tokens(model, prompt_messages(request))
        except AppError:
            return None
        room = route.context_window - prompt_tokens
        if room < 1:
            return None
        sampling = replace(
            request.sampling, max_tokens=min(request.sampling.max_tokens, route.max_output_tokens, room)
        )
        return Candidate(name, route, provider, replace(request, model=model, sampling=sampling))

    @asynccontextmanager
    async def _serve(
        self, job: Job, attempt: Callable[[Candidate], Awaitable[T]]
    ) -> AsyncIterator[tuple[Candidate, T]]:
        """Try the candidates in order under one budget; yield the one that succeeded with the
        attempt's result. Its concurrency slot is held until the block ends."""
        budget = Budget(
            retries_left=self._settings.upstream_max_retries,
            # The request's own deadline (set when it arrived), else one from now.
            deadline=job.ctx.deadline or self._clock() + self._settings.upstream_deadline,
            clock=self._clock,
        )
        requested = job.model
        failure: AppError | None = None
        """The last upstream failure, reported when every candidate failed."""
        skipped: AppError | None = None
        """Why a candidate was not even tried (open circuit), reported when none was."""
        for candidate in self.candidates(job):
            if budget.remaining() <= 0:
                break
            circuit = self.circuit(candidate.upstream)
            if not circuit.allow():
                skipped = skipped or self._circuit_open(candidate.name, circuit)
                continue
            cap = self.caps[candidate.provider.name]
            try:
                result = await self._attempts(job, candidate, circuit, cap, budget, attempt)
            except AppError as exc:
                if not _may_fall_back(exc):
                    raise
                failure = exc
                continue
            if candidate.name != requested:
                self._served_by_fallback(job, candidate, requested)
            try:
                yield candidate, result
            finally:
                cap.release()
            return
        if failure is not None:
            raise failure
        if skipped is not None:
            raise skipped
        raise UpstreamTimeout(
            "The request ran out of time before the upstream answered.", code="deadline_exceeded"
        )

    @staticmethod
    def _circuit_open(name: str, circuit: CircuitBreaker) -> ServiceUnavailable:
        wait = max(1.0, circuit.retry_after())
        return ServiceUnavailable(
            f"The model '{name}' is failing; requests to it are paused for {wait:.0f} s.",
            code="circuit_open",
            retry_after=wait,
        )

    async def _attempts(
        self,
        job: Job,
        candidate: Candidate,
        circuit: CircuitBreaker,
        cap: ConcurrencyCap,
        budget: Budget,
        attempt: Callable[[Candidate], Awaitable[T]],
    ) -> T:
        """Attempt one candidate, retrying transient failures while the budget allows. On
        success, the candidate's concurrency slot is still held (the caller releases it)."""
        tries = 0
        while True:
            if tries and not circuit.allow():
                raise self._circuit_open(candidate.name, circuit)
            try:
                await cap.acquire(candidate.provider.name, budget.deadline)
            except BaseException:
                circuit.release()
                raise
            try:
                return await self._within_deadline(candidate, budget, attempt)
            except BaseException as exc:
                cap.release()
                self._judge(job, candidate, circuit, exc)
                if not isinstance(exc, AppError):
                    raise
                delay = self._retry_delay(exc, tries, budget, circuit)
                if delay is None:
                    raise
                failure: AppError = exc
            tries += 1
            self._spend_retry(job, candidate, budget, delay, failure)
            await asyncio.sleep(delay)

    @staticmethod
    def _judge(job: Job, candidate: Candidate, circuit: CircuitBreaker, exc: BaseException) -> None:
        """What a failed attempt says about the upstream's health."""
        if _is_upstream_failure(exc):
            circuit.record_failure()
            log.warning(
                "upstream attempt failed",
                extra={"upstream": candidate.upstream, "code": getattr(exc, "code", None), "job": job.id},
            )
        elif isinstance(exc, AppError) and exc.status_code < 500:
            circuit.record_success()  # it answered: the request itself was at fault
        else:
            circuit.release()

    async def _within_deadline(
        self, candidate: Candidate, budget: Budget, attempt: Callable[[Candidate], Awaitable[T]]
    ) -> T:
        try:
            async with asyncio.timeout(max(0.0, budget.remaining())):
                return await attempt(candidate)
        except TimeoutError:
            raise UpstreamTimeout(
                f"The upstream model did not answer within the {self._settings.upstream_deadline:g} s "
                "this request may take.",
                code="deadline_exceeded",
            ) from None

    def _retry_delay(
        self, exc: AppError, tries: int, budget: Budget, circuit: CircuitBreaker
    ) -> float | None:
        """Seconds to wait before retrying after `exc`, or None when it is not to be retried."""
        if not exc.transient or budget.retries_left <= 0 or circuit.state != "closed":
            return None
        if exc.retry_after is not None:
            if exc.retry_after > self._settings.retry_max_wait:
                return None  # the upstream asks for a longer pause than we wait: fall back instead
            delay = exc.retry_after
        else:
            # Exponential backoff plus up to one base delay of jitter, so that clients that
            # failed together do not come back together.
            base = self._settings.retry_backoff
            delay = min(self._settings.retry_backoff_max, base * 2**tries) + random.uniform(0, base)
        # Not worth sleeping if no time would be left for the attempt itself.
        return delay if delay < budget.remaining() else None

    def _spend_retry(
        self, job: Job, candidate: Candidate, budget: Budget, delay: float, exc: AppError
    ) -> None:
        budget.retries_left -= 1
        budget.retries += 1
        self.retries_total += 1
        job.metadata["retries"] = budget.retries
        log.info(
            "retrying upstream",
            extra={
                "upstream": candidate.upstream,
                "retry": budget.retries,
                "delay_s": round(delay, 3),
                "code": exc.code,
                "job": job.id,
            },
        )

    def _served_by_fallback(self, job: Job, candidate: Candidate, requested: str) -> None:
        self.fallbacks_total += 1
        job.model = candidate.name
        job.route = candidate.route
        job.provider = candidate.provider
        job.request = candidate.request
        job.metadata["served_by"] = candidate.name
        job.metadata["fallback_from"] = requested
        job.metadata["provider"] = candidate.provider.name
        # Sent with the response's headers (a stream's too: they go out after its first chunk,
        # which is where the fallback was chosen), so a client or a proxy can tell without
        # parsing the body.
        job.ctx.headers[FALLBACK_HEADER] = candidate.name
        log.info("served by a fallback", extra={"requested": requested, "served_by": candidate.name})
