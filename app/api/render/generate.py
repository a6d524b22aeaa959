"""`/v1/generate`'s body and stream frames (presets and conversations answer in the same shape)."""

from __future__ import annotations

from collections.abc import Callable

from app.api.render.logprobs import token_logprobs
from app.api.render.tools import tool_calls
from app.api.streaming import frame
from app.providers.base import Chunk
from app.services.generation.pipeline import Outcome


def generate_body(outcome: Outcome) -> dict[str, object]:
    """The response body (and the final stream event) for an outcome."""
    c = outcome.completion
    prefix = outcome.job.prefix or ""  # a branch's text begins with the text it continued
    return {
        "id": outcome.job.id,
        "object": "generation",
        "created": outcome.created,
        "model": outcome.job.model,
        "provider": outcome.job.provider.name,
        "text": prefix + c.choices[0].text if c.choices else "",
        "choices": [
            {
                "index": ch.index,
                "text": prefix + ch.text,
                "finish_reason": ch.finish_reason,
                **({} if ch.logprobs is None else {"logprobs": token_logprobs(ch.logprobs)}),
                **({"tool_calls": tool_calls(ch.tool_calls)} if ch.tool_calls else {}),
            }
            for ch in c.choices
        ],
        "usage": c.usage.as_dict(),
        "sampling": outcome.sampling(),
        "timings": outcome.timings(),
        "metadata": outcome.job.metadata,
    }


def text_frame(generation_id: str, chunk: Chunk) -> list[bytes]:
    """A `generation.chunk` event for a text delta (nothing for a chunk without text)."""
    if not chunk.text:
        return []
    event: dict[str, object] = {
        "id": generation_id,
        "object": "generation.chunk",
        "index": chunk.index,
        "text": chunk.text,
    }
    if chunk.logprobs is not None:
        event["logprobs"] = token_logprobs(chunk.logprobs)
    return [frame(event)]


def generate_stream(generation_id: str) -> Callable[[Chunk | Outcome], list[bytes]]:
    """Text deltas, then one `generation` event with the full metadata."""

    def render(item: Chunk | Outcome) -> list[bytes]:
        if isinstance(item, Outcome):
            return [frame(generate_body(item))]
        return text_frame(generation_id, item)

    return render
