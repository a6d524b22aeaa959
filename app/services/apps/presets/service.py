"""Presets at work: validate inputs, render prompts, pick sampling (tuned or not), plan the job.

Other services use a preset through three calls: `get(name)`, `system_prompt(name, inputs)`
(a conversation's system prompt) and `choose_sampling(preset, overrides)` (the defaults to pass
to `GenerationService.plan`, with the tuning variant; `annotate(job)` records the choice).
`plan(...)` does all of it for `POST /v1/presets/{name}/generate`, including summarizing in
stages a text longer than the model's context window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio

from app.errors import InvalidRequest, NotFound
from app.providers.base import Message
from app.services.apps.grounding import Grounding, grounded_prompt, passage_chars
from app.services.apps.presets import Preset
from app.services.apps.summarize import PartResult, reduce_to_fit, user_message_counter
from app.services.apps.tuning import TuningService
from app.services.generation.context import RequestContext
from app.services.generation.pipeline import GenerationService, Job, Prepaid
from app.services.generation.spec import GenerationSpec

#: Grounded presets and the input that holds the question (the search's query).
GROUNDED_INPUTS = {"qa": "question", "customer_service": "message"}

#: Tokens kept free besides the prompt and the answer, for the estimate's own error.
_MARGIN = 16


@dataclass(frozen=True, slots=True)
class SamplingChoice:
    """A preset's sampling for one request: its defaults, and the tuning variant (if any)."""

    preset: str
    defaults: dict[str, Any]
    """Pass as `defaults=` to `GenerationService.plan`; the client's own values still win."""
    variant: str | None = None
    tuned: bool = False

    def annotate(self, job: Job) -> Job:
        """Mark `job` as this preset's (its record and its `sampling` metadata say so)."""
        job.preset = self.preset
        job.tuned = self.tuned
        job.variant = self.variant
        return job


class PresetService:
    """The loaded presets and what can be done with them."""

    def __init__(
        self,
        presets: Mapping[str, Preset],
        generation: GenerationService,
        tuning: TuningService,
        *,
        map_concurrency: int = 4,
        max_text_chars: int = 500_000,
    ) -> None:
        self._presets = dict(presets)
        self._generation = generation
        self.tuning = tuning
        self._map_concurrency = map_concurrency
        self._max_text_chars = max_text_chars

    def all(self) -> list[Preset]:
        return list(self._presets.values())

    def find(self, name: str) -> Preset | None:
        return self._presets.get(name)

    def get(self, name: str) -> Preset:
        preset = self._presets.get(name)
        if preset is None:
            raise NotFound(
                f"The preset '{name}' does not exist; GET /v1/presets lists the available ones.",
                param="preset",
                code="preset_not_found",
            )
        return preset

    def system_prompt(self, name: str, inputs: Mapping[str, Any], *, param_prefix: str = "inputs") -> str:
        """The preset's system prompt rendered from `inputs` (only the inputs it uses are
        required); `InvalidRequest` naming `{param_prefix}.{field}` when one is wrong."""
        preset = self.get(name)
        values = preset.validate_inputs(dict(inputs), param_prefix=param_prefix, only=preset.system_inputs)
        return preset.render(values).system

    async def choose_sampling(
        self, preset: Preset | str, overrides: Mapping[str, Any], *, model: str | None = None
    ) -> SamplingChoice:
        """The preset's defaults; when it has tuning variants and the request sets none of the
        fields they vary, one variant picked by Thompson sampling on top. A default
        `max_tokens` is capped at what `model` can generate (an explicit one is not)."""
        preset = self.get(preset) if isinstance(preset, str) else preset
        _, route, _ = self._generation.resolve(model)
        variants = preset.variants
        variant: str | None = None
        if variants and not any(overrides.get(f) is not None for f in preset.tuned_fields):
            variant = await self.tuning.choose(preset)
        defaults = {**preset.defaults, **(variants[variant] if variant else {})}
        if "max_tokens" in defaults:
            defaults["max_tokens"] = min(defaults["max_tokens"], route.max_output_tokens)
        return SamplingChoice(preset.name, defaults, variant, tuned=variant is not None)

    async def plan(
        self,
        ctx: RequestContext,
        name: str,
        inputs: Mapping[str, Any],
        *,
        model: str | None,
        overrides: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
        user: str | None = None,
        endpoint: str = "presets",
    ) -> Job:
        """The job for one preset generation (after any map stages a long text needs)."""
        preset = self.get(name)
        values = preset.validate_inputs(dict(inputs))
        choice = await self.choose_sampling(preset, overrides, model=model)
        rendered = preset.render(values)
        messages = [Message("system", rendered.system), Message("user", rendered.prompt)]
        reduction_meta: dict[str, Any] | None = None
        base = GenerationSpec(endpoint=endpoint, model=model, overrides=overrides, extra=extra, user=user)
        summarize = preset.spec.summarize
        if summarize is not None and values.get(summarize.input):
            messages, reduction_meta = await self._fit(ctx, preset, values, summarize.input, choice, base)
        job = self._generation.plan(ctx, replace(base, messages=messages, defaults=choice.defaults))
        choice.annotate(job)
        job.privacy = preset.spec.privacy
        if reduction_meta is not None:
            job.metadata["summarize"] = reduction_meta
        return job

    def grounded_input(self, name: str) -> str:
        """The input of grounded preset `name` that holds the question (400 for another preset)."""
        self.get(name)
        field = GROUNDED_INPUTS.get(name)
        if field is None:
            raise InvalidRequest(
                f"The preset '{name}' does not take vector_store_ids; grounded presets: "
                f"{', '.join(sorted(GROUNDED_INPUTS))}.",
                param="vector_store_ids",
                code="preset_not_grounded",
            )
        return field

    async def plan_grounded(
        self,
        ctx: RequestContext,
        name: str,
        inputs: Mapping[str, Any],
        grounding: Grounding,
        *,
        model: str | None,
        overrides: Mapping[str, Any],
    ) -> Job:
        """The job for a grounded preset (`qa`, `customer_service`): its system prompt as
        usual, and one user turn holding the retrieved passages as quoted data, then the
        question (passages never enter the system turn)."""
        preset = self.get(name)
        self.grounded_input(name)
        values = preset.validate_inputs(dict(inputs))
        choice = await self.choose_sampling(preset, overrides, model=model)
        rendered = preset.render(values)
        _, route, _ = self._generation.resolve(model)
        max_chars = passage_chars(route.context_window)
        messages = [
            Message("system", rendered.system),
            Message("user", grounded_prompt(grounding, rendered.prompt, max_chars=max_chars)),
        ]
        base = GenerationSpec(endpoint="presets", model=model, overrides=overrides, messages=messages)
        job = self._generation.plan(ctx, replace(base, defaults=choice.defaults))
        choice.annotate(job)
        job.privacy = preset.spec.privacy
        return job

    async def _fit(
        self,
        ctx: RequestContext,
        preset: Preset,
        values: dict[str, Any],
        key: str,
        choice: SamplingChoice,
        base: GenerationSpec,
    ) -> tuple[list[Message], dict[str, Any] | None]:
        """Summarize `values[key]` in stages until the final prompt fits the context window;
        each part is generated as `base` asks (its model, the client's sampling, extra and user).

        The whole map-reduce's tokens (every part's prompt and summary, and the final stage) are
        reserved against the caller's limits before the first part is sent; the parts draw on
        that reservation, which is settled with what they used before the final stage runs."""
        original = values[key]
        if len(original) > self._max_text_chars:
            raise InvalidRequest(
                f"The text is {len(original)} characters long; this service summarizes at most "
                f"{self._max_text_chars} characters.",
                param=f"inputs.{key}",
                code="text_too_long",
            )
        overrides = base.overrides
        name, route, provider = self._generation.resolve(base.model)
        upstream = route.upstream_model or name

        def count_messages(messages: tuple[Message, ...]) -> int:
            return provider.count_tokens(upstream, messages)

        def messages_for(text: str, stage: str, part: int = 1, parts: int = 1) -> list[Message]:
            r = preset.render({**values, key: text}, stage=stage, part=part, parts=parts)
            return [Message("system", r.system), Message("user", r.prompt)]

        merged = {**choice.defaults, **overrides}
        answer = min(
            merged.get("max_tokens") or self._generation.default_max_tokens(route), route.max_output_tokens
        )
        window = route.context_window

        def fits(text: str) -> bool:
            stage = "single" if text is original else "final"
            return count_messages(tuple(messages_for(text, stage))) + answer + _MARGIN <= window

        # Each part's summary is kept short enough that several fit together in the next stage.
        part_answer = min(answer, max(32, window // 8))
        overhead = count_messages(tuple(messages_for("", "map", 999, 999)))
        budget = window - overhead - part_answer - _MARGIN
        part_overrides = {k: v for k, v in overrides.items() if k != "max_tokens"} | {"n": 1}

        async def summarize_part(text: str, part: int, parts: int) -> PartResult:
            job = self._generation.plan(
                ctx,
                replace(
                    base,
                    messages=messages_for(text, "map", part, parts),
                    overrides=part_overrides,
                    defaults={**choice.defaults, "max_tokens": part_answer},
                ),
            )
            job.preset = preset.name
            job.privacy = preset.spec.privacy
            job.prepaid = prepaid
            job.metadata["summarize_stage"] = {"stage": "map", "part": part, "parts": parts}
            outcome = await self._generation.complete(job)
            c = outcome.completion
            return PartResult(
                job.id,
                c.choices[0].text if c.choices else "",
                c.usage.prompt_tokens,
                c.usage.completion_tokens,
            )

        count = user_message_counter(count_messages)
        prepaid: Prepaid | None = None
        if not await anyio.to_thread.run_sync(fits, original):
            tokens = await anyio.to_thread.run_sync(count, original)
            parts = -(-tokens // max(1, budget))
            # Every part's prompt and summary (later stages take fewer), and the final stage.
            prepaid = await self._generation.prepay(
                ctx, tokens + parts * (overhead + 2 * part_answer) + window
            )
        try:
            text, reduction = await reduce_to_fit(
                original,
                fits=fits,
                budget=budget,
                count=count,
                summarize_part=summarize_part,
                concurrency=self._map_concurrency,
            )
        finally:
            if prepaid is not None:
                await prepaid.settle()
        if reduction is None:
            return messages_for(text, "single"), None
        return messages_for(text, "final"), reduction.metadata()
