"""`POST /v1/generate`: a prompt in, text and its sampling metadata out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.admission import metered_per_job
from app.api.deps import CtxDep, GenerationDep
from app.api.http import json_response
from app.api.openapi import stream_responses
from app.api.render.generate import generate_body, generate_stream
from app.api.streaming import sse_response, until_disconnected
from app.schemas.generate import GenerateChunk, GenerateRequest, GenerateResponse

router = APIRouter(tags=["generate"])


@router.post(
    "/v1/generate",
    response_model=GenerateResponse,
    responses=stream_responses(GenerateChunk, GenerateResponse),
)
@metered_per_job
async def generate(body: GenerateRequest, ctx: CtxDep, service: GenerationDep, request: Request) -> Response:
    """Generate text for a prompt. With `stream: true`, text deltas arrive as server-sent
    events, followed by one `generation` event with the full metadata, then `[DONE]`. With
    `logprobs: true`, each choice (and each text delta) carries its tokens' log probabilities."""
    job = service.plan(ctx, body.to_spec())
    if body.stream:
        return await sse_response(service.stream(job), generate_stream(job.id), request)
    outcome = await until_disconnected(request, service.complete(job))
    return json_response(generate_body(outcome))
