"""Bodies and stream frames of `POST /v1/completions` (`text_completion`), as OpenAI sends them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.api.streaming import frame
from app.providers.base import Chunk, FinishReason
from app.services.completions import Batch, BatchOutcome


def _finish(reason: FinishReason) -> str:
    # A raw continuation never calls a tool; the legacy shape knows only these three.
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def completion_body(result: BatchOutcome, echo: bool) -> dict[str, Any]:
    batch = result.batch
    first = result.outcomes[0]
    choices = []
    for position, outcome in enumerate(result.outcomes):
        prefix = batch.prompts[position] if echo else ""
        for choice in outcome.completion.choices:
            choices.append(
                {
                    "text": prefix + choice.text,
                    "index": position * batch.n + choice.index,
                    "logprobs": None,
                    "finish_reason": _finish(choice.finish_reason),
                }
            )
    return {
        "id": batch.id,
        "object": "text_completion",
        "created": first.created,
        "model": batch.job.model,
        "choices": choices,
        "usage": result.usage.as_dict(),
        "provider": batch.job.provider.name,
        "sampling": first.sampling(),
        "timings": {
            "ttft_ms": round(first.ttft_ms, 2),
            "total_ms": round(sum(o.total_ms for o in result.outcomes), 2),
        },
        "metadata": {k: v for o in result.outcomes for k, v in o.job.metadata.items()},
    }


def completion_stream(
    batch: Batch, include_usage: bool, echo: bool
) -> Callable[[Chunk | BatchOutcome], list[bytes]]:
    """Each chunk a `text_completion` with one choice; with `include_usage`, every chunk carries
    `"usage": null` and a last one with no choices carries the usage."""
    started: set[int] = set()
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None) -> bytes:
        body: dict[str, Any] = {
            "id": batch.id,
            "object": "text_completion",
            "created": created,
            # Read late: a fallback model may have taken over when the stream opened.
            "model": batch.job.model,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage
        return frame(body)

    def render(item: Chunk | BatchOutcome) -> list[bytes]:
        if isinstance(item, BatchOutcome):
            return [chunk([], item.usage.as_dict())] if include_usage else []
        text = item.text
        if echo and item.index not in started:
            text = batch.prompt_of(item.index) + text
        started.add(item.index)
        if not text and item.finish_reason is None:
            return []
        finish = None if item.finish_reason is None else _finish(item.finish_reason)
        return [chunk([{"text": text, "index": item.index, "logprobs": None, "finish_reason": finish}], None)]

    return render
