"""Wire models shared by every endpoint family: sampling fields and generation metadata."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Schema(BaseModel):
    """Base of every wire model: attribute docstrings become the OpenAPI descriptions."""

    model_config = ConfigDict(use_attribute_docstrings=True)


StopField = Annotated[
    str | list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
    Field(default=None, description="Up to 4 sequences where generation stops."),
]


class SamplingFields(Schema):
    """Sampling settings a request may set; unset fields take the model's (or preset's) defaults."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    """Randomness: 0 is (nearly) deterministic, 2 is wild."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Nucleus sampling: only tokens within this cumulative probability are considered."""
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    """Most tokens to generate per choice; bounded by the model."""
    n: int | None = Field(default=None, ge=1, le=8)
    """How many independent choices to generate."""
    stop: StopField = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    """Same seed and settings → same text (exactly on the embedded model, best effort upstream)."""
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Positive values push the model towards new topics."""
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Positive values discourage repeating the same words."""

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, str) and not value:
            raise ValueError("a stop sequence must not be empty")
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    def sampling_overrides(self) -> dict[str, Any]:
        """The sampling fields the client actually set."""
        return {
            name: getattr(self, name)
            for name in SamplingFields.model_fields
            if getattr(self, name) is not None
        }


class EffectiveSampling(Schema):
    """The sampling settings actually used, after defaults, presets and tuning."""

    temperature: float
    top_p: float
    max_tokens: int
    n: int
    stop: list[str]
    seed: int | None
    """The seed used: send it back to reproduce this answer."""
    presence_penalty: float
    frequency_penalty: float
    tuned: bool = False
    """Whether these settings were picked by feedback tuning."""
    variant: str | None = None
    """The tuning variant chosen, when tuned."""


class UsageOut(Schema):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(Schema):
    ttft_ms: float
    """Milliseconds until the first text was available."""
    total_ms: float
    """Milliseconds for the whole generation."""
