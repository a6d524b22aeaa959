"""Legacy completions: one raw-text generation per prompt, their choices numbered prompt × n.

Each prompt is its own job through `GenerationService` (keys, limits, cache, privacy, records
and retries apply to each); prompts run one after another, so a request of many prompts never
takes more than one place in the embedded model's queue.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from app.providers.base import Chunk, Usage
from app.services.generation.context import RequestContext
from app.services.generation.pipeline import GenerationService, Job, Outcome
from app.services.generation.spec import GenerationSpec


@dataclass(frozen=True, slots=True)
class Batch:
    """The planned jobs of one request, one per prompt, each generating `n` choices."""

    jobs: tuple[Job, ...]
    prompts: tuple[str, ...]
    n: int

    @property
    def id(self) -> str:
        """The response's id: the first job's (every job keeps its own in the records)."""
        return self.jobs[0].id

    @property
    def job(self) -> Job:
        """The job that names the model and provider in the response (the first)."""
        return self.jobs[0]

    def prompt_of(self, index: int) -> str:
        """The prompt a choice (numbered across the batch) continues."""
        return self.prompts[index // self.n]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Every job's outcome, in prompt order."""

    batch: Batch
    outcomes: tuple[Outcome, ...]

    @property
    def usage(self) -> Usage:
        return Usage(
            sum(o.completion.usage.prompt_tokens for o in self.outcomes),
            sum(o.completion.usage.completion_tokens for o in self.outcomes),
        )


def plan(
    generation: GenerationService,
    ctx: RequestContext,
    *,
    model: str,
    prompts: Sequence[str],
    overrides: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    user: str | None = None,
    logprobs: int | None = None,
) -> Batch:
    """Plan every prompt before any runs: a prompt that cannot be served refuses the request."""
    jobs = tuple(
        generation.plan(
            ctx,
            GenerationSpec(
                endpoint="completions",
                model=model,
                messages=[],
                prompt=prompt,
                overrides=overrides,
                extra=extra,
                user=user,
                logprobs=logprobs,
                id_prefix="cmpl",
            ),
        )
        for prompt in prompts
    )
    return Batch(jobs=jobs, prompts=tuple(prompts), n=jobs[0].request.sampling.n)


async def complete(generation: GenerationService, batch: Batch) -> BatchOutcome:
    outcomes = [await generation.complete(job) for job in batch.jobs]
    return BatchOutcome(batch, tuple(outcomes))


async def stream(generation: GenerationService, batch: Batch) -> AsyncGenerator[Chunk | BatchOutcome, None]:
    """Each prompt's chunks in turn, renumbered `prompt × n + choice`, then the `BatchOutcome`."""
    outcomes: list[Outcome] = []
    for position, job in enumerate(batch.jobs):
        offset = position * batch.n
        async with aclosing(generation.stream(job)) as items:
            async for item in items:
                if isinstance(item, Outcome):
                    outcomes.append(item)
                elif item.usage is None:
                    yield replace(item, index=item.index + offset) if offset else item
    yield BatchOutcome(batch, tuple(outcomes))
