"""`POST /v1/generate`: a prompt in, text and its sampling metadata out."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api import grounded
from app.api.admission import metered_per_job
from app.api.deps import CtxDep, GenerationDep, SettingsDep, VectorStoresDep
from app.api.http import json_response
from app.api.openapi import stream_responses
from app.api.render.generate import generate_body, generate_stream
from app.api.streaming import sse_response, until_disconnected
from app.providers.base import Message
from app.schemas.generate import GenerateChunk, GenerateRequest, GenerateResponse
from app.services.apps.grounding import grounded_prompt, passage_chars

router = APIRouter(tags=["generate"])


@router.post(
    "/v1/generate",
    response_model=GenerateResponse,
    responses=stream_responses(GenerateChunk, GenerateResponse),
)
@metered_per_job
async def generate(
    body: GenerateRequest,
    ctx: CtxDep,
    service: GenerationDep,
    request: Request,
    stores: VectorStoresDep,
    settings: SettingsDep,
) -> Response | dict[str, object]:
    """Generate text for a prompt. With `stream: true`, text deltas arrive as server-sent
    events, followed by one `generation` event with the full metadata, then `[DONE]`. With
    `logprobs: true`, each choice (and each text delta) carries its tokens' log probabilities.

    With `vector_store_ids`, the prompt is a question answered from the stores' passages (quoted
    in the user turn, never the system one): `metadata.grounding.citations` lists the passages
    the answer drew on (file, filename, quoted passage, score); when none scores
    `score_threshold` or more, the answer says the documents do not answer, without asking the
    model."""
    if body.vector_store_ids is not None:
        grounding = await grounded.search(
            body, body.prompt, param="prompt", where=(ctx, request, stores, settings)
        )
        _, route, _ = service.resolve(body.model)
        spec = body.to_spec()
        question = grounded_prompt(grounding, body.prompt, max_chars=passage_chars(route.context_window))
        spec = replace(spec, messages=[*spec.messages[:-1], Message("user", question)])
        return await grounded.reply(service.plan(ctx, spec), grounding, service, request, stream=body.stream)
    job = service.plan(ctx, body.to_spec())
    if body.stream:
        return await sse_response(service.stream(job), generate_stream(job.id), request)
    outcome = await until_disconnected(request, service.complete(job))
    return json_response(generate_body(outcome))
