"""Wire models of `/v1/presets`: the preset list, a preset generation request, tuning reports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool

from app.schemas.common import GroundingFields, SamplingFields, Schema


class PresetGenerateRequest(SamplingFields, GroundingFields):
    """A preset's inputs, plus optional sampling overrides (which always win over the preset's
    defaults and its tuning)."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    """Values for the preset's input fields (see its `input_schema`)."""
    model: str | None = None
    """A model from `GET /v1/models`; the default model when omitted."""
    stream: StrictBool = False
    """Answer with server-sent events, exactly like `POST /v1/generate`."""


class PresetTuning(Schema):
    variants: dict[str, dict[str, Any]]
    """Candidate sampling variants, by name."""


class PresetOut(Schema):
    """A preset: what it does, the inputs it takes, and its default sampling."""

    object: Literal["preset"] = "preset"
    name: str
    title: str
    description: str
    multi_turn: bool
    """Meant for conversations (its system prompt frames every turn)."""
    input_schema: dict[str, Any]
    """The inputs as a JSON schema (draft 2020-12); `format: multiline` marks long text."""
    sampling: dict[str, Any]
    """Default sampling settings."""
    tuning: PresetTuning | None
    """Variants tuned by feedback, when the preset has them."""
    summarize_long_input: str | None
    """The input that may exceed the context window (summarized in stages)."""


class PresetList(Schema):
    object: Literal["list"] = "list"
    data: list[PresetOut]


class VariantTuning(Schema):
    name: str
    sampling: dict[str, Any]
    alpha: float
    """1 + the sum of normalized ratings."""
    beta: float
    """1 + the number of ratings minus that sum."""
    mean: float
    """alpha / (alpha + beta): the expected rating."""
    ratings: int
    chosen: int
    """Tuned generations that used this variant."""
    chosen_share: float
    recent_share: float
    """Share among the latest `recent_window` tuned generations."""


class TuningReport(Schema):
    """Each variant's Beta posterior and how often it was chosen."""

    object: Literal["preset.tuning"] = "preset.tuning"
    preset: str
    enabled: bool
    tuned_fields: list[str]
    """A request that sets any of these fields is not tuned."""
    prior: dict[str, float]
    chosen_total: int
    recent_window: int
    variants: list[VariantTuning]
