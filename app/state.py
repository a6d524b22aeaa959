"""The typed application state built by the lifespan and read by the dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from app.observability.metrics import Metrics
from app.probes.service import ProbeService
from app.providers.base import Provider
from app.services.access import Access
from app.services.conversations import ConversationService
from app.services.feedback import FeedbackService
from app.services.generation import GenerationService
from app.services.presets import PresetService
from app.services.records import RecordWriter
from app.services.responses import ResponseService
from app.services.safeguards import Safeguards
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
    conversations: ConversationService
    probes: ProbeService
    """Bias probes run as jobs."""
    responses: ResponseService
    """Stored responses of the Responses API."""
    redis: Redis | None = None
    """Shared counters and caches, when REDIS_URL is configured."""
    presets: PresetService | None = None
    """Task presets and their tuning (issue 3)."""
    records: RecordWriter | None = None
    """Writes one record per generation (issue 3)."""
    feedback: FeedbackService | None = None
    """Ratings of generations (issue 3)."""
    access: Access | None = None
    """Client keys, rate limits and usage accounting."""
    safeguards: Safeguards | None = None
    """Privacy, response cache and resilience: their counters and circuit states feed metrics."""
    metrics: Metrics = field(default_factory=Metrics)
    """Prometheus series of this app instance (see `app.observability.metrics`)."""
