"""`/v1/presets`: list the task presets, generate with one, see how its tuning goes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.admission import metered_per_job
from app.api.deps import ClientDep, CtxDep, GenerationDep, PresetsDep, SettingsDep, VectorStoresDep
from app.api.openapi import stream_responses
from app.api.render.generate import generate_body, generate_stream
from app.api.streaming import sse_response, until_disconnected
from app.errors import InvalidRequest
from app.providers.base import Chunk
from app.schemas.generate import GenerateChunk, GenerateResponse
from app.schemas.presets import PresetGenerateRequest, PresetList, PresetOut, TuningReport
from app.services.apps.grounding import ground, no_answer, no_answer_stream
from app.services.apps.presets.service import PresetService
from app.services.apps.vector_stores import VectorStoreService
from app.services.generation.context import RequestContext
from app.services.generation.pipeline import GenerationService, Outcome
from app.settings import Settings

router = APIRouter(tags=["presets"])


@router.get("/v1/presets", response_model=PresetList)
async def list_presets(presets: PresetsDep, client: ClientDep) -> dict[str, object]:
    """Every preset the caller may use, with its input schema, default sampling and tuning variants."""
    return {"object": "list", "data": [p.describe() for p in presets.all() if client.may_use_preset(p.name)]}


@router.get("/v1/presets/{name}", response_model=PresetOut)
async def get_preset(name: str, presets: PresetsDep, client: ClientDep) -> dict[str, object]:
    client.require_preset(name)
    return presets.get(name).describe()


@router.get("/v1/presets/{name}/tuning", response_model=TuningReport)
async def get_tuning(name: str, presets: PresetsDep, client: ClientDep) -> dict[str, object]:
    """Each tuning variant's Beta posterior and how often it was chosen, from your key's
    generations and ratings (the admin's `/admin/presets/{name}/tuning` shows everyone's)."""
    client.require_preset(name)
    return await presets.tuning.report(presets.get(name), owner=client.key_id)


@router.post(
    "/v1/presets/{name}/generate",
    response_model=GenerateResponse,
    responses=stream_responses(GenerateChunk, GenerateResponse),
)
@metered_per_job
async def generate_with_preset(
    name: str,
    body: PresetGenerateRequest,
    presets: PresetsDep,
    service: GenerationDep,
    ctx: CtxDep,
    request: Request,
    stores: VectorStoresDep,
    settings: SettingsDep,
) -> Response | dict[str, object]:
    """Generate with a preset: its prompts are rendered from `inputs`, its sampling defaults
    (or a tuned variant) apply where the request sets nothing. Answers exactly like
    `POST /v1/generate`, streaming included."""
    ctx.caller.require_preset(name)  # before any work (a long text's stages) is done
    if body.vector_store_ids is not None:
        return await _grounded(name, body, presets, service, (ctx, request, stores, settings))
    job = await until_disconnected(
        request,
        presets.plan(ctx, name, body.inputs, model=body.model, overrides=body.sampling_overrides()),
    )
    if body.stream:
        return await sse_response(service.stream(job), generate_stream(job.id), request)
    outcome = await until_disconnected(request, service.complete(job))
    return generate_body(outcome)


async def _grounded(
    name: str,
    body: PresetGenerateRequest,
    presets: PresetService,
    service: GenerationService,
    where: tuple[RequestContext, Request, VectorStoreService, Settings],
) -> Response | dict[str, object]:
    ctx, request, stores, settings = where
    field = presets.grounded_input(name)
    question = body.inputs.get(field)
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequest(f"'inputs.{field}' must be a non-empty string.", param=f"inputs.{field}")
    threshold = body.score_threshold
    if threshold is None:
        threshold = settings.grounding_score_threshold
    grounding = await until_disconnected(
        request,
        ground(
            stores,
            ctx,
            body.vector_store_ids or [],
            question,
            max_results=body.max_num_results or settings.grounding_max_passages,
            threshold=settings.grounding_score_threshold
            if body.score_threshold is None
            else body.score_threshold,
        ),
    )
    job = await presets.plan_grounded(
        ctx, name, body.inputs, grounding, model=body.model, overrides=body.sampling_overrides()
    )
    if body.stream:
        items = service.stream(job) if grounding.answerable else no_answer_stream(job)
        render = generate_stream(job.id)

        def with_citations(item: Chunk | Outcome) -> list[bytes]:
            if isinstance(item, Outcome):
                item.job.metadata["grounding"] = grounding.metadata(_text(item))
            return render(item)

        return await sse_response(items, with_citations, request)
    if grounding.answerable:
        outcome = await until_disconnected(request, service.complete(job))
    else:
        outcome = no_answer(job)
    outcome.job.metadata["grounding"] = grounding.metadata(_text(outcome))
    return generate_body(outcome)


def _text(outcome: Outcome) -> str:
    c = outcome.completion
    return c.choices[0].text if c.choices else ""
