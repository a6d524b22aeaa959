"""Map-reduce for texts longer than the model's context window.

A text that does not fit (with room left for the summary) is split into parts that do, counted
with the provider's own tokenizer, at paragraph, then line, sentence and word boundaries. Each
part is summarized (the map stage, a few parts at a time); the part summaries, joined, take the
text's place. If they still do not fit, the same happens again. The final generation then
combines them; it is the one the client receives (streamed or not), and its metadata lists the
stages and the generations they took.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from app.errors import InvalidRequest
from app.providers.base import Message

MAX_STAGES = 4
MIN_PART_TOKENS = 48
_SEPARATORS = (r"\n\s*\n", r"\n", r"(?<=[.!?;:])\s+", r"\s+")

Counter = Callable[[str], int]


def split_text(text: str, budget: int, count: Counter) -> list[str]:
    """Split `text` into consecutive parts of at most `budget` tokens each, preferring the
    largest natural boundaries."""
    if count(text) <= budget:
        return [text]
    for separator in _SEPARATORS:
        pieces = [p for p in re.split(separator, text) if p.strip()]
        if len(pieces) > 1:
            joiner = "\n\n" if separator == _SEPARATORS[0] else ("\n" if separator == r"\n" else " ")
            break
    else:
        middle = len(text) // 2
        return split_text(text[:middle], budget, count) + split_text(text[middle:], budget, count)
    groups: list[list[str]] = []
    current: list[str] = []
    used = 0
    for piece in pieces:
        tokens = count(piece)
        if tokens > budget:
            if current:
                groups.append(current)
                current, used = [], 0
            groups.extend([part] for part in split_text(piece, budget, count))
            continue
        # Joining costs about a token; leave that much room between pieces.
        if current and used + tokens + 1 > budget:
            groups.append(current)
            current, used = [], 0
        current.append(piece)
        used += tokens + 1
    if current:
        groups.append(current)
    out: list[str] = []
    for group in groups:
        out.extend(_halve_until_fit(group, joiner, budget, count))
    return out


def _halve_until_fit(group: list[str], joiner: str, budget: int, count: Counter) -> list[str]:
    """Token counts of pieces do not add up exactly: halve a group that came out too long."""
    text = joiner.join(group)
    if len(group) == 1 or count(text) <= budget:
        return [text]
    middle = len(group) // 2
    return _halve_until_fit(group[:middle], joiner, budget, count) + _halve_until_fit(
        group[middle:], joiner, budget, count
    )


@dataclass(slots=True)
class Stage:
    parts: int
    generations: list[str] = field(default_factory=list)
    input_tokens: int = 0


@dataclass(slots=True)
class Reduction:
    """What the stages did, for the final response's metadata."""

    input_tokens: int
    stages: list[Stage] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "stages": [
                {
                    "stage": "map",
                    "parts": s.parts,
                    "input_tokens": s.input_tokens,
                    "generations": s.generations,
                }
                for s in self.stages
            ]
            + [{"stage": "final", "parts": 1}],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
        }


@dataclass(frozen=True, slots=True)
class PartResult:
    id: str
    text: str
    prompt_tokens: int
    completion_tokens: int


async def reduce_to_fit(
    text: str,
    *,
    fits: Callable[[str], bool],
    budget: int,
    count: Counter,
    summarize_part: Callable[[str, int, int], Awaitable[PartResult]],
    concurrency: int,
) -> tuple[str, Reduction | None]:
    """Summarize `text` in stages until `fits(text)`; returns the text for the final stage and
    what was done (None when the text fit from the start). Counting and splitting a long text
    take a tokenizer pass over all of it: they run on a worker thread, off the event loop."""
    if await anyio.to_thread.run_sync(fits, text):
        return text, None
    if budget < MIN_PART_TOKENS:
        raise InvalidRequest(
            "The text is longer than the model's context window, and the window leaves too little room "
            "to summarize it in parts; lower max_tokens or choose a model with a larger context.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    reduction = Reduction(input_tokens=await anyio.to_thread.run_sync(count, text))
    limit = asyncio.Semaphore(concurrency)
    while not await anyio.to_thread.run_sync(fits, text):
        if len(reduction.stages) == MAX_STAGES:
            raise InvalidRequest(
                f"The text is still too long after {MAX_STAGES} stages of summarizing.",
                param="inputs",
                code="context_length_exceeded",
            )
        parts = await anyio.to_thread.run_sync(split_text, text, budget, count)
        stage = Stage(parts=len(parts), input_tokens=await anyio.to_thread.run_sync(count, text))

        async def one(index: int, part: str, total: int = len(parts)) -> PartResult:
            async with limit:
                return await summarize_part(part, index + 1, total)

        # A task group: one failed part cancels the others (nobody waits for them any more).
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(i, p)) for i, p in enumerate(parts)]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        results = [task.result() for task in tasks]
        stage.generations = [r.id for r in results]
        reduction.stages.append(stage)
        for r in results:
            reduction.prompt_tokens += r.prompt_tokens
            reduction.completion_tokens += r.completion_tokens
        shorter = "\n\n".join(f"[Part {i + 1}] {r.text.strip()}" for i, r in enumerate(results))
        if await anyio.to_thread.run_sync(count, shorter) >= stage.input_tokens:
            raise InvalidRequest(
                "Summarizing the text in parts did not make it shorter; try a smaller max_tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        text = shorter
    return text, reduction


def user_message_counter(count_tokens: Callable[[tuple[Message, ...]], int]) -> Counter:
    """Tokens a piece of text adds to a user message, by the provider's tokenizer."""
    base = count_tokens((Message("user", ""),))
    return lambda text: max(0, count_tokens((Message("user", text),)) - base)
