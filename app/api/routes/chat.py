"""`POST /v1/chat/completions`: OpenAI's chat completions, request and response shapes alike."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.admission import metered_per_job
from app.api.deps import CtxDep, GenerationDep
from app.api.http import json_response
from app.api.openapi import stream_responses
from app.api.render.chat import chat_body, chat_stream
from app.api.streaming import sse_response, until_disconnected
from app.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

router = APIRouter(tags=["chat"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses=stream_responses(ChatCompletionChunk),
)
@metered_per_job
async def create_chat_completion(
    body: ChatCompletionRequest, ctx: CtxDep, service: GenerationDep, request: Request
) -> Response:
    """Create a model response for the conversation, as OpenAI's API does."""
    job = service.plan(ctx, body.to_spec())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await sse_response(service.stream(job), chat_stream(job, include_usage), request)
    outcome = await until_disconnected(request, service.complete(job))
    return json_response(chat_body(outcome))
