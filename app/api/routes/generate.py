"""`POST /v1/generate`: a prompt in, text and its sampling metadata out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import GenerationDep
from app.api.render.logprobs import token_logprobs
from app.api.responses import json_response
from app.api.streaming import frame, sse_response, until_disconnected
from app.providers.base import Chunk, Message
from app.schemas.generate import GenerateRequest, GenerateResponse
from app.services.generation import Outcome

router = APIRouter(tags=["generate"])


def generate_body(outcome: Outcome) -> dict[str, object]:
    """The response body (and the final stream event) for an outcome."""
    c = outcome.completion
    prefix = outcome.job.prefix or ""
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
            }
            for ch in c.choices
        ],
        "usage": c.usage.as_dict(),
        "sampling": outcome.sampling(),
        "timings": outcome.timings(),
        "metadata": outcome.job.metadata,
    }


def render_generate_stream(job_id: str):  # type: ignore[no-untyped-def]
    def render(item: Chunk | Outcome) -> list[bytes]:
        if isinstance(item, Outcome):
            return [frame(generate_body(item))]
        if not item.text:
            return []
        event: dict[str, object] = {
            "id": job_id,
            "object": "generation.chunk",
            "index": item.index,
            "text": item.text,
        }
        if item.logprobs is not None:
            event["logprobs"] = token_logprobs(item.logprobs)
        return [frame(event)]

    return render


@router.post(
    "/v1/generate",
    response_model=GenerateResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}},
)
async def generate(body: GenerateRequest, service: GenerationDep, request: Request) -> Response:
    """Generate text for a prompt. With `stream: true`, text deltas arrive as server-sent
    events, followed by one `generation` event with the full metadata, then `[DONE]`."""
    messages = [Message("system", body.system)] if body.system else []
    messages.append(Message("user", body.prompt))
    job = service.plan(
        endpoint="generate",
        model=body.model,
        messages=messages,
        overrides=body.sampling_overrides(),
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        continue_from=body.continue_from,
    )
    if body.stream:
        return await sse_response(service.stream(job), render_generate_stream(job.id), request)
    outcome = await until_disconnected(request, service.complete(job))
    return json_response(generate_body(outcome))
