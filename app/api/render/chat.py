"""Chat completions in OpenAI's shapes: the `chat.completion` body and `chat.completion.chunk`s."""

from __future__ import annotations

import time
from collections.abc import Callable

from app.api.streaming import frame
from app.providers.base import Chunk
from app.services.generation import Job, Outcome


def chat_body(outcome: Outcome) -> dict[str, object]:
    c = outcome.completion
    return {
        "id": outcome.job.id,
        "object": "chat.completion",
        "created": outcome.created,
        "model": outcome.job.model,
        "choices": [
            {
                "index": ch.index,
                "message": {"role": "assistant", "content": ch.text, "refusal": None},
                "logprobs": None,
                "finish_reason": ch.finish_reason,
            }
            for ch in c.choices
        ],
        "usage": c.usage.as_dict(),
        "provider": outcome.job.provider.name,
        "sampling": outcome.sampling(),
        "timings": outcome.timings(),
        "metadata": outcome.job.metadata,
    }


def chat_stream(job: Job, include_usage: bool) -> Callable[[Chunk | Outcome], list[bytes]]:
    started: set[int] = set()
    # No `system_fingerprint`: OpenAI's schema allows it absent but not null, and we have none.
    head = {"id": job.id, "object": "chat.completion.chunk"}

    def chunk(created: int, choices: list[dict[str, object]], **more: object) -> bytes:
        # `job.model` is read late: a fallback model may have taken over when the stream opened.
        return frame({**head, "model": job.model, "created": created, "choices": choices, **more})

    created = int(time.time())

    def render(item: Chunk | Outcome) -> list[bytes]:
        if isinstance(item, Outcome):
            if not include_usage:
                return []
            return [chunk(created, [], usage=item.completion.usage.as_dict())]
        delta: dict[str, object] = {}
        if item.index not in started:
            started.add(item.index)
            delta["role"] = "assistant"
        if item.text or "role" in delta:
            delta["content"] = item.text
        return [
            chunk(
                created,
                [
                    {
                        "index": item.index,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": item.finish_reason,
                    }
                ],
            )
        ]

    return render
