"""Wire models of `POST /v1/generate`, the frontend endpoint."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, model_validator

from app.errors import InvalidRequest
from app.providers.base import FinishReason, Message
from app.schemas.common import (
    EffectiveSampling,
    GroundingFields,
    JsonNumber,
    SamplingFields,
    Schema,
    Timings,
    UsageOut,
)
from app.services.generation.spec import GenerationSpec

MAX_PROMPT_CHARS = 200_000
"""Ceiling of free-text fields besides the messages themselves (image URLs, tool arguments and
descriptions); messages are bounded by the `max_prompt_chars` setting instead."""


class GenerateRequest(SamplingFields, GroundingFields):
    """A prompt, an optional system prompt, and sampling settings."""

    prompt: str = Field(min_length=1)
    """The text to respond to."""
    system: str | None = Field(default=None)
    """Optional instructions placed before the prompt."""
    model: str | None = None
    """A model from `GET /v1/models`; the default model when omitted."""
    stream: StrictBool = False
    """Answer with server-sent events: text deltas, then the metadata."""
    logprobs: StrictBool = False
    """Return each choice's tokens with their log probabilities (`choices[].logprobs`)."""
    top_logprobs: Annotated[int | None, JsonNumber] = Field(default=None, ge=0, le=20)
    """With `logprobs`, also the most likely alternatives at each token (0–20)."""
    continue_from: str | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS)
    """Branch an answer: the exact start of the answer to resume after — typically a choice's
    text up to some token, plus an alternative token picked from its `top_logprobs`. The model
    continues the same conversation from there (the embedded model: exactly; `GET /v1/models`
    says which models can, 400 otherwise). Each choice's `text` then begins with this text;
    its `logprobs` cover only the tokens generated after it."""

    def to_spec(self) -> GenerationSpec:
        """The generation this request asks for: the system prompt (if any), then the prompt."""
        messages = [Message("system", self.system)] if self.system else []
        messages.append(Message("user", self.prompt))
        return GenerationSpec(
            endpoint="generate",
            model=self.model,
            messages=messages,
            overrides=self.sampling_overrides(),
            message_params=["system", "prompt"][-len(messages) :],
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            continue_from=self.continue_from,
        )

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> GenerateRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest(
                "top_logprobs requires logprobs to be true.", param="top_logprobs", code="invalid_value"
            )
        return self


class TopLogprobOut(Schema):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut]
    """The most likely tokens at this place, as many as `top_logprobs` asked for."""


class GenerateChoice(Schema):
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: list[TokenLogprobOut] | None = None
    """With `logprobs: true`: the tokens of `text` (their `token` strings join back to it), each
    with its log probability and the `top_logprobs` alternatives. Absent otherwise."""
    tool_calls: list[dict[str, Any]] | None = None
    """A conversation's reply that calls its tools: `[{id, type, function: {name, arguments}}]`
    (then `finish_reason` is `tool_calls`). Absent otherwise."""


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
