"""Wire models of `POST /v1/completions`: OpenAI's legacy text completions, raw continuation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from app.schemas.chat import StreamOptions
from app.schemas.common import EffectiveSampling, SamplingFields, Schema, Timings, UsageOut
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
    prompt: str | list[str] = Field(max_length=MAX_PROMPT_CHARS)
    """The text to continue, or a list of texts (each its own prompt; choices come prompt by
    prompt, `n` each). Token-id arrays are not accepted."""
    max_tokens: int | None = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=1_000_000)
    """Most tokens to generate per choice (16 unless set; null means the model's default)."""
    logprobs: int | None = Field(default=None, ge=0, le=5)
    """Log probabilities of each generated token and of up to this many likely alternatives."""
    echo: bool | None = False
    """Put the prompt before each choice's text (not with `logprobs`; checked after it)."""
    best_of: int | None = Field(default=None, ge=0, le=20)
    """Only `best_of == n` is served (no server-side ranking)."""
    suffix: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    """Text after an insertion: not supported (400 when set)."""
    logit_bias: dict[str, float] | None = None
    """Honoured only by providers that list it (an OpenAI-compatible upstream)."""
    user: str | None = Field(default=None, max_length=256)
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompts(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("prompt must be a string or a non-empty list of strings")
            if any(isinstance(v, int | list) for v in value):
                raise ValueError("token-id arrays are not supported: send the prompt as text")
            if len(value) > MAX_PROMPTS:
                raise ValueError(f"at most {MAX_PROMPTS} prompts are accepted in one request")
            if any(isinstance(v, str) and len(v) > MAX_PROMPT_CHARS for v in value):
                raise ValueError(f"each prompt is at most {MAX_PROMPT_CHARS} characters")
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
