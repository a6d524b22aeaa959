"""`POST /v1/chat/completions`: OpenAI's chat completions, request and response shapes alike."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import GenerationDep
from app.api.render.logprobs import choice_logprobs
from app.api.responses import json_response
from app.api.streaming import frame, sse_response, until_disconnected
from app.providers.base import Choice, Chunk, ToolCallDelta
from app.schemas.chat import ChatCompletion, ChatCompletionRequest
from app.services.generation import Job, Outcome

router = APIRouter(tags=["chat"])


def _message(ch: Choice) -> dict[str, object]:
    message: dict[str, object] = {
        "role": "assistant",
        # A turn that only calls tools has no text: null, as OpenAI answers.
        "content": ch.text if ch.text or not ch.tool_calls else None,
        "refusal": None,
    }
    if ch.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in ch.tool_calls
        ]
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


def render_chat_stream(job: Job, include_usage: bool) -> Callable[[Chunk | Outcome], list[bytes]]:
    started: set[int] = set()
    # No `system_fingerprint`: OpenAI's schema allows it absent but not null, and we have none.
    head = {"id": job.id, "object": "chat.completion.chunk"}

    def chunk(created: int, choices: list[dict[str, object]], **more: object) -> bytes:
        # `job.model` is read late: a fallback model may have taken over when the stream opened.
        return frame({**head, "model": job.model, "created": created, "choices": choices, **more})

    created = int(time.time())

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


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}},
)
async def create_chat_completion(
    body: ChatCompletionRequest, service: GenerationDep, request: Request
) -> Response:
    """Create a model response for the conversation, as OpenAI's API does."""
    overrides = body.sampling_overrides()
    if body.max_completion_tokens is not None:
        overrides["max_tokens"] = body.max_completion_tokens
    job = service.plan(
        endpoint="chat",
        model=body.model,
        messages=body.provider_messages(),
        overrides=overrides,
        extra=body.extra_params(),
        user=body.user,
        id_prefix="chatcmpl",
        tools=body.tool_specs(),
        tool_choice=body.tool_choice_value(),
        parallel_tool_calls=body.parallel_tool_calls is not False,
        logprobs=body.top_logprobs_value(),
    )
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await sse_response(service.stream(job), render_chat_stream(job, include_usage), request)
    outcome = await until_disconnected(request, service.complete(job))
    return json_response(chat_body(outcome))
