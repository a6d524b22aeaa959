"""Chat completions in OpenAI's shapes: the `chat.completion` body and `chat.completion.chunk`s,
tool calls and log probabilities included."""

from __future__ import annotations

from collections.abc import Callable

from app.api.render.logprobs import choice_logprobs
from app.api.render.tools import tool_calls
from app.api.streaming import frame
from app.providers.base import Choice, Chunk, ToolCallDelta
from app.services.generation.pipeline import Job, Outcome


def _message(ch: Choice) -> dict[str, object]:
    message: dict[str, object] = {
        "role": "assistant",
        # A turn that only calls tools has no text: null, as OpenAI answers.
        "content": ch.text if ch.text or not ch.tool_calls else None,
        "refusal": None,
    }
    if ch.tool_calls:
        message["tool_calls"] = tool_calls(ch.tool_calls)
    return message


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
                "message": _message(ch),
                "logprobs": choice_logprobs(ch.logprobs),
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

    created = job.created

    # With include_usage, OpenAI sends `"usage": null` on every chunk but the last.
    more: dict[str, object] = {"usage": None} if include_usage else {}

    def choice(index: int, delta: dict[str, object], **fields: object) -> bytes:
        body = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None, **fields}
        return chunk(created, [body], **more)

    def render(item: Chunk | Outcome) -> list[bytes]:
        if isinstance(item, Outcome):
            if not include_usage:
                return []
            return [chunk(created, [], usage=item.completion.usage.as_dict())]
        delta: dict[str, object] = {}
        if item.index not in started:
            started.add(item.index)
            delta["role"] = "assistant"
        if item.text or ("role" in delta and not item.tool_calls):
            delta["content"] = item.text
        elif "role" in delta:
            delta["content"] = None
        frames: list[bytes] = []
        if item.tool_calls:
            # OpenAI's order: a call's id, type and name first (arguments ""), then pieces of
            # arguments; the SDK's stream helpers assemble them by `index`.
            for call in item.tool_calls:
                frames.extend(choice(item.index, {**delta, "tool_calls": [f]}) for f in _fragments(call))
                delta = {}
        if delta or item.logprobs is not None or not frames:
            frames.append(
                choice(
                    item.index,
                    delta,
                    logprobs=choice_logprobs(item.logprobs),
                    finish_reason=item.finish_reason,
                )
            )
        elif item.finish_reason is not None:
            frames.append(choice(item.index, {}, finish_reason=item.finish_reason))
        return frames

    return render


def _fragments(call: ToolCallDelta) -> list[dict[str, object]]:
    frames: list[dict[str, object]] = []
    if call.id is not None or call.name is not None:
        first: dict[str, object] = {"index": call.index}
        if call.id is not None:
            first["id"] = call.id
            first["type"] = "function"
        first["function"] = {"name": call.name or "", "arguments": ""}
        frames.append(first)
    if call.arguments:
        frames.append({"index": call.index, "function": {"arguments": call.arguments}})
    return frames
