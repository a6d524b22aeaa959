"""Wire models of `/v1/feedback`: rate a generation, read the summary."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, StrictInt

from app.schemas.common import Schema


def _whole_number(value: Any) -> Any:
    """JSON does not tell `5` from `5.0`; a string or a fraction stays refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class FeedbackRequest(Schema):
    """A rating of one generation; rating it again replaces the earlier rating."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    generation_id: str = Field(min_length=1, max_length=64)
    """The `id` of a response from any generation endpoint."""
    rating: Literal["up", "down"] | Annotated[StrictInt, Field(ge=1, le=5), BeforeValidator(_whole_number)]
    """Thumbs ("up" / "down") or stars (1–5)."""
    comment: str | None = Field(default=None, max_length=4000)


class FeedbackOut(Schema):
    object: Literal["feedback"] = "feedback"
    generation_id: str
    rating: str | int
    score: float
    """The rating normalized to [0, 1]: up = 1, down = 0, r stars = (r - 1) / 4."""
    comment: str | None
    preset: str | None
    variant: str | None
    replaced: bool
    """Whether an earlier rating of this generation was replaced."""
    created_at: int
    updated_at: int


class RatingStats(Schema):
    count: int
    mean_rating: float | None
    """Mean normalized rating in [0, 1]."""
    first_rated_at: int
    last_rated_at: int


class VariantSummary(RatingStats):
    variant: str | None
    """The tuning variant; null for generations that were not tuned."""


class PresetSummary(RatingStats):
    preset: str | None
    """null for generations made without a preset (/v1/generate, /v1/chat/completions)."""
    variants: list[VariantSummary]


class FeedbackSummary(Schema):
    object: Literal["feedback.summary"] = "feedback.summary"
    scale: str
    """How ratings were normalized."""
    presets: list[PresetSummary]
