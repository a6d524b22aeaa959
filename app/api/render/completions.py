"""Bodies and stream frames of `POST /v1/completions` (`text_completion`), as OpenAI sends them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.api.streaming import frame
from app.providers.base import Chunk, FinishReason, TokenLogprob
from app.services.apps.completions import Batch, BatchOutcome


def _finish(reason: FinishReason) -> str:
    # A raw continuation never calls a tool; the legacy shape knows only these three.
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def legacy_logprobs(tokens: tuple[TokenLogprob, ...], offset: int = 0) -> dict[str, Any]:
    """The legacy shape: parallel lists of the tokens, their log probabilities, a
    {token: logprob} map of the likeliest alternatives (the chosen token among them, as OpenAI
    sends it) and each token's character offset in the choice's text."""
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{t.token: t.logprob, **{a.token: a.logprob for a in t.top}} for t in tokens],
        "text_offset": offsets,
    }


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
                    "logprobs": None if choice.logprobs is None else legacy_logprobs(choice.logprobs),
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
    offsets: dict[int, int] = {}
    """Characters of each choice sent so far, where its next tokens' `text_offset`s start."""
    created = batch.jobs[0].created

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
        logprobs = None
        if item.logprobs:
            logprobs = legacy_logprobs(item.logprobs, offsets.get(item.index, 0))
        offsets[item.index] = offsets.get(item.index, 0) + len(text)
        choice = {"text": text, "index": item.index, "logprobs": logprobs, "finish_reason": finish}
        return [chunk([choice], None)]

    return render
