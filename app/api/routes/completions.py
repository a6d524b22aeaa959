"""`POST /v1/completions`: OpenAI's legacy text completions (raw continuation of a prompt)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.admission import metered_per_job
from app.api.deps import CtxDep, GenerationDep
from app.api.http import json_response
from app.api.openapi import stream_responses
from app.api.render.completions import completion_body, completion_stream
from app.api.streaming import sse_response, until_disconnected
from app.schemas.completions import CompletionRequest, TextCompletion, TextCompletionChunk
from app.services.apps import completions

router = APIRouter(tags=["completions"])


@router.post(
    "/v1/completions",
    response_model=TextCompletion,
    responses=stream_responses(TextCompletionChunk),
)
@metered_per_job
async def create_completion(
    body: CompletionRequest, ctx: CtxDep, service: GenerationDep, request: Request
) -> Response:
    """Continue each prompt as raw text (no chat template), as OpenAI's legacy API does."""
    batch = completions.plan(
        service,
        ctx,
        model=body.model,
        prompts=body.prompts,
        overrides=body.sampling_overrides(),
        extra=body.extra_params(),
        user=body.user,
        logprobs=body.logprobs,
    )
    echo = bool(body.echo)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await sse_response(
            completions.stream(service, batch), completion_stream(batch, include_usage, echo), request
        )
    result = await until_disconnected(request, completions.complete(service, batch))
    return json_response(completion_body(result, echo))
