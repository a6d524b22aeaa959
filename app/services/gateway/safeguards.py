"""The policies every job runs through, outermost first: privacy → response cache → resilience
(retries, fallbacks, circuit breakers, concurrency caps) → the provider.

Privacy comes first so that the cache and the upstream only ever see redacted prompts; the cache
comes before resilience so that a hit costs no upstream call, no retry and no concurrency slot.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from app.clock import Clocks
from app.providers.base import Chunk, Completion, Provider
from app.services.gateway.cache import ResponseCache
from app.services.gateway.privacy import PrivacyGuard
from app.services.gateway.resilience import Resilience
from app.services.generation.pipeline import Job
from app.settings import Settings
from app.storage.secrets import pseudonym_secret


@dataclass(slots=True)
class Safeguards:
    """The runner chain, with each step at hand for metrics (circuit states, cache hits, retries)."""

    privacy: PrivacyGuard
    cache: ResponseCache
    resilience: Resilience

    @classmethod
    def build(
        cls,
        settings: Settings,
        providers: Mapping[str, Provider],
        redis: Redis | None,
        clocks: Clocks | None = None,
    ) -> Safeguards:
        clocks = clocks or Clocks()
        resilience = Resilience(settings, providers, clock=clocks.monotonic)
        cache = ResponseCache.build(settings, resilience, redis, clocks.monotonic)
        privacy = PrivacyGuard(settings, cache, secret=pseudonym_secret(settings))
        return cls(privacy=privacy, cache=cache, resilience=resilience)

    async def complete(self, job: Job) -> Completion:
        return await self.privacy.complete(job)

    def stream(self, job: Job) -> AsyncGenerator[Chunk, None]:
        return self.privacy.stream(job)
