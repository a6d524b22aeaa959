"""Wire models of `POST /v1/generate`, the frontend endpoint."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.providers.base import FinishReason
from app.schemas.common import EffectiveSampling, SamplingFields, Schema, Timings, UsageOut


class GenerateRequest(SamplingFields):
    """A prompt, an optional system prompt, and sampling settings."""

    prompt: str = Field(min_length=1)
    """The text to respond to."""
    system: str | None = Field(default=None)
    """Optional instructions placed before the prompt."""
    model: str | None = None
    """A model from `GET /v1/models`; the default model when omitted."""
    stream: bool = False
    """Answer with server-sent events: text deltas, then the metadata."""


class GenerateChoice(Schema):
    index: int
    text: str
    finish_reason: FinishReason


class GenerateResponse(Schema):
    """The generated text with everything needed to understand and reproduce it."""

    id: str
    object: Literal["generation"] = "generation"
    created: int
    model: str
    provider: str
    text: str
    """The first choice's text."""
    choices: list[GenerateChoice]
    usage: UsageOut
    sampling: EffectiveSampling
    timings: Timings
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Extra facts about the generation (turns left out, redactions, cache, fallbacks)."""


class GenerateChunk(Schema):
    """One streamed text delta."""

    id: str
    object: Literal["generation.chunk"] = "generation.chunk"
    index: int
    text: str
