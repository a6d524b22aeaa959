"""`POST /v1/chat/completions`: OpenAI's chat completions, request and response shapes alike."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import GenerationDep
from app.api.openapi import stream_responses
from app.api.responses import json_response
from app.api.streaming import frame, sse_response, until_disconnected
from app.providers.base import Chunk, Message
from app.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from app.services.generation import Job, Outcome

router = APIRouter(tags=["chat"])

_ROLES = {"developer": "system"}


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


def render_chat_stream(job: Job, include_usage: bool) -> Callable[[Chunk | Outcome], list[bytes]]:
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


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses=stream_responses(ChatCompletionChunk),
)
async def create_chat_completion(
    body: ChatCompletionRequest, service: GenerationDep, request: Request
) -> Response:
    """Create a model response for the conversation, as OpenAI's API does."""
    overrides = body.sampling_overrides()
    if body.max_completion_tokens is not None:
        overrides["max_tokens"] = body.max_completion_tokens
    messages = [Message(_ROLES.get(m.role, m.role), m.text) for m in body.messages]  # type: ignore[arg-type]
    job = service.plan(
        endpoint="chat",
        model=body.model,
        messages=messages,
        overrides=overrides,
        extra=body.extra_params(),
        user=body.user,
        id_prefix="chatcmpl",
    )
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await sse_response(service.stream(job), render_chat_stream(job, include_usage), request)
    outcome = await until_disconnected(request, service.complete(job))
    return json_response(chat_body(outcome))
