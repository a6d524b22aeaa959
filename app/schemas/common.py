"""Wire models shared by every endpoint family: sampling fields and generation metadata."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Schema(BaseModel):
    """Base of every wire model: attribute docstrings become the OpenAPI descriptions."""

    model_config = ConfigDict(use_attribute_docstrings=True)


def _json_number(value: Any) -> Any:
    """A number is a JSON number: pydantic's lax mode would also take `true` as 1 and `"5"` as 5,
    which the OpenAPI document (and OpenAI) refuse."""
    if isinstance(value, bool | str):
        raise ValueError("Input should be a number")
    return value


JsonNumber = BeforeValidator(_json_number)
"""Marks an `int` or `float` field that refuses booleans and strings."""

StopField = Annotated[
    Annotated[str, Field(min_length=1)]
    | Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=4)]
    | None,
    Field(default=None, description="Up to 4 sequences where generation stops."),
]


class GroundingFields(Schema):
    """Answer from vector stores' passages (`/v1/generate`, grounded presets, conversations)."""

    vector_store_ids: list[str] | None = None
    """Answer from these stores' passages, cited in `metadata.grounding.citations` (at most 50
    stores); when no passage is relevant, the answer says the documents do not answer."""
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Passages scoring below this are not used (default: the server's `grounding_score_threshold`)."""
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    """Passages given to the model at most (default: the server's `grounding_max_passages`)."""


class SamplingFields(Schema):
    """Sampling settings a request may set; unset fields take the model's (or preset's) defaults."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    temperature: Annotated[float | None, JsonNumber] = Field(default=None, ge=0, le=2)
    """Randomness: 0 is (nearly) deterministic, 2 is wild."""
    top_p: Annotated[float | None, JsonNumber] = Field(default=None, gt=0, le=1)
    """Nucleus sampling: only tokens within this cumulative probability are considered."""
    max_tokens: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=1_000_000)
    """Most tokens to generate per choice; bounded by the model."""
    n: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=8)
    """How many independent choices to generate."""
    stop: StopField = None
    seed: Annotated[int | None, JsonNumber] = Field(default=None, ge=0, le=2**63 - 1)
    """Same seed and settings → same text (exactly on the embedded model, best effort upstream)."""
    presence_penalty: Annotated[float | None, JsonNumber] = Field(default=None, ge=-2, le=2)
    """Positive values push the model towards new topics."""
    frequency_penalty: Annotated[float | None, JsonNumber] = Field(default=None, ge=-2, le=2)
    """Positive values discourage repeating the same words."""

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
