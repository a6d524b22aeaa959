"""Wire models of `POST /v1/completions`: OpenAI's legacy text completions, raw continuation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from app.schemas.chat import StreamOptions
from app.schemas.common import EffectiveSampling, JsonNumber, SamplingFields, Schema, Timings, UsageOut
from app.schemas.generate import MAX_PROMPT_CHARS

MAX_PROMPTS = 16
"""Prompts in one request: each is generated `n` times, so the bound keeps a request's work finite."""

DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for legacy completions (short: they were meant to be continued)."""


class CompletionRequest(SamplingFields):
    """OpenAI's legacy completion request: the model continues each prompt as raw text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    model: str = Field(min_length=1, max_length=200)
    """The model to use (required, as in OpenAI's API)."""
    prompt: (
        Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
        | Annotated[
            list[Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]],
            Field(min_length=1, max_length=MAX_PROMPTS),
        ]
    )
    """The text to continue, or a list of texts (each its own prompt; choices come prompt by
    prompt, `n` each). Token-id arrays are not accepted."""
    max_tokens: Annotated[int | None, JsonNumber] = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=1_000_000)
    """Most tokens to generate per choice (16 unless set; null means the model's default)."""
    logprobs: Annotated[int | None, JsonNumber] = Field(default=None, ge=0, le=5)
    """Log probabilities of each generated token and of up to this many likely alternatives."""
    echo: StrictBool | None = False
    """Put the prompt before each choice's text (not with `logprobs`; checked after it)."""
    best_of: Annotated[int | None, JsonNumber] = Field(default=None, ge=0, le=20)
    """Only `best_of == n` is served (no server-side ranking)."""
    suffix: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    """Text after an insertion: not supported (400 when set)."""
    logit_bias: dict[str, Annotated[float, JsonNumber]] | None = None
    """Honoured only by providers that list it (an OpenAI-compatible upstream)."""
    user: str | None = Field(default=None, max_length=256)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompts(cls, value: Any) -> Any:
        # Token ids are a valid prompt to OpenAI: say plainly why they are not here.
        if isinstance(value, list) and any(isinstance(v, int | list) for v in value):
            raise ValueError("token-id arrays are not supported: send the prompt as text")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (text after an insertion) is not supported")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value != (info.data.get("n") or 1):
            raise ValueError("best_of must equal n: completions are not ranked server-side")
        return value

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @field_validator("echo")
    @classmethod
    def _echo_without_logprobs(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value and info.data.get("logprobs") is not None:
            raise ValueError(
                "echo with logprobs is not supported: the prompt's own log probabilities are not computed"
            )
        return value

    def extra_params(self) -> dict[str, Any]:
        return {"logit_bias": self.logit_bias} if self.logit_bias else {}


class CompletionChoice(Schema):
    text: str
    index: int
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "content_filter"]


class TextCompletion(Schema):
    """OpenAI's `text_completion`, plus this service's metadata fields."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageOut
    provider: str
    sampling: EffectiveSampling
    timings: Timings
    metadata: dict[str, Any] = Field(default_factory=dict)


class CompletionChunkChoice(Schema):
    text: str
    index: int
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None = None
    """Null until the choice ends, as OpenAI's stream sends it."""


class TextCompletionChunk(Schema):
    """One streamed `text_completion`: a piece of one choice, or (last, with `include_usage`)
    no choices and the usage."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: UsageOut | None = None
    """Null on every chunk but the last when `stream_options.include_usage` is set; absent otherwise."""
