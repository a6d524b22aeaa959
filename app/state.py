"""The typed application state built by the lifespan and read by the dependencies."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from app.providers.base import Provider
from app.services.generation import GenerationService
from app.settings import Settings
from app.storage.db import Database


@dataclass(slots=True)
class AppState:
    settings: Settings
    providers: dict[str, Provider]
    generation: GenerationService
    started_at: int
    """Unix time the service started (reported as the models' `created`)."""
    db: Database
    redis: Redis | None = None
    """Shared counters and caches, when REDIS_URL is configured."""
