"""The typed application state: built whole by the lifespan, read by the dependencies."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from app.clock import Clocks
from app.observability.metrics import Metrics
from app.providers.base import Embedder, Provider
from app.services.apps.batches import BatchService
from app.services.apps.conversations import ConversationService
from app.services.apps.feedback import FeedbackService
from app.services.apps.files import FileService
from app.services.apps.presets.service import PresetService
from app.services.apps.probes.service import ProbeService
from app.services.apps.records import RecordWriter
from app.services.apps.responses import ResponseService
from app.services.apps.vector_stores import VectorStoreService
from app.services.gateway.access import Access
from app.services.gateway.safeguards import Safeguards
from app.services.generation.pipeline import GenerationService
from app.services.retrieval.embeddings import EmbeddingService
from app.settings import Settings
from app.storage.db import Database


@dataclass(frozen=True, slots=True)
class AppState:
    """Everything a request can reach, complete before the first request is served."""

    settings: Settings
    clocks: Clocks
    """What every TTL, deadline and timestamp reads."""
    started_at: int
    """Unix time the service started (reported as the models' `created`)."""
    metrics: Metrics
    """Prometheus series of this app instance (see `app.observability.metrics`)."""
    db: Database
    redis: Redis | None
    """Shared counters and caches, when REDIS_URL is configured (None: in-process ones)."""
    providers: dict[str, Provider]
    safeguards: Safeguards
    """Privacy, response cache and resilience: their counters and circuit states feed metrics."""
    access: Access
    """Client keys, rate limits and usage accounting."""
    generation: GenerationService
    records: RecordWriter
    """Writes one record per generation."""
    presets: PresetService
    feedback: FeedbackService
    conversations: ConversationService
    responses: ResponseService
    """Stored responses of the Responses API."""
    probes: ProbeService
    """Bias probes run as jobs."""
    embedders: dict[str, Embedder]
    """Embedding models by public name (the embedded e5, upstream routes)."""
    embeddings: EmbeddingService
    """/v1/embeddings, and the embedder ingestion and search use."""
    files: FileService
    """Uploaded files (`/v1/files`), which batches and vector stores read."""
    vector_stores: VectorStoreService
    """Vector stores, their ingestion worker, and search."""
    batches: BatchService
    """Batches (`/v1/batches`) and the worker that runs them."""
