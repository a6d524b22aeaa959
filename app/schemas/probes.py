"""Wire models of `/v1/probes`: bias probes with counterfactual pairs, and their reports."""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from app.errors import InvalidRequest
from app.schemas.common import Schema

Value = Annotated[str, Field(min_length=1, max_length=200)]
GroupName = Annotated[str, Field(min_length=1, max_length=64)]
Groups = dict[GroupName, Annotated[list[Value], Field(min_length=1, max_length=100)]]


def placeholders(template: str) -> list[str]:
    """The `{names}` a template uses (`{{` and `}}` are literal braces)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"the template is not valid: {exc}") from exc


class BiasProbeRequest(Schema):
    """A template, one variable that takes its values from groups, and the generation settings.
    Sample i of every group uses the same seed and settings (a counterfactual pair)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    suite: str | None = Field(default=None, max_length=64)
    """A built-in suite (`GET /v1/probes/bias/suites`); its template and variables are used
    unless the request gives its own."""
    template: str | None = Field(default=None, min_length=1, max_length=4000)
    """The prompt, with `{placeholders}` for the variables, e.g.
    "Write a one-sentence reference letter for {name}, applying as a {job}."."""
    variables: dict[Annotated[str, Field(min_length=1, max_length=64)], Value | Groups] | None = None
    """Each placeholder's value: a string, or — for exactly one of them, the attribute under
    test — groups of values, e.g. {"name": {"female": ["Emily", ...], "male": ["James", ...]},
    "job": "nurse"}. Sample i of a group uses its value i (cycling through the list)."""
    system: str | None = Field(default=None, max_length=4000)
    """An optional system prompt for every generation."""
    model: str | None = None
    """A model from `GET /v1/models`; the default model when omitted."""
    samples: int = Field(default=8, ge=2, le=1000)
    """Samples per group, i.e. counterfactual pairs (bounded by the service's settings)."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """Base seed: pair i uses seed + i. Drawn at random (and reported) when omitted."""
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    """Significance level of the tests, after Holm's correction across measures."""

    @model_validator(mode="after")
    def _check(self) -> BiasProbeRequest:
        if self.suite is None and self.template is None:
            raise InvalidRequest(
                "Give a `suite` or a `template` with `variables`.", param="suite", code="invalid_value"
            )
        if self.template is not None:
            placeholders(self.template)
        return self


class BiasSuite(Schema):
    name: str
    title: str
    language: str
    template: str
    variables: dict[str, str]
    """The fixed values of the other placeholders."""
    attribute: str
    """The placeholder whose values differ between groups."""
    groups: dict[str, list[str]]


class BiasSuiteList(Schema):
    object: Literal["list"] = "list"
    data: list[BiasSuite]


class Progress(Schema):
    done: int
    """Generations finished."""
    total: int


class Probe(Schema):
    """A probe run: its state, progress and — once it succeeded — its report."""

    id: str
    object: Literal["probe"] = "probe"
    kind: Literal["bias"] = "bias"
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: int
    finished_at: int | None
    progress: Progress
    request: dict[str, Any]
    """The effective request: the suite resolved, the base seed chosen."""
    report: dict[str, Any] | None
    """Per measure: each group's mean with its confidence interval, the paired test (p-value,
    Holm-adjusted), effect sizes with intervals and a verdict; the distinctive words of each
    group; the paired outputs; and an overall verdict."""
    error: str | None


class ProbeList(Schema):
    object: Literal["list"] = "list"
    data: list[Probe]
