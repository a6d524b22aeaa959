"""`/v1/presets`: list the task presets, generate with one, see how its tuning goes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api import grounded
from app.api.admission import metered_per_job
from app.api.deps import ClientDep, CtxDep, GenerationDep, PresetsDep, SettingsDep, VectorStoresDep
from app.api.openapi import stream_responses
from app.api.render.generate import generate_body, generate_stream
from app.api.streaming import sse_response, until_disconnected
from app.schemas.generate import GenerateChunk, GenerateResponse
from app.schemas.presets import PresetGenerateRequest, PresetList, PresetOut, TuningReport
from app.services.apps.presets.service import PresetService
from app.services.apps.vector_stores import VectorStoreService
from app.services.generation.context import RequestContext
from app.services.generation.pipeline import GenerationService
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
    field = presets.grounded_input(name)
    grounding = await grounded.search(body, body.inputs.get(field), param=f"inputs.{field}", where=where)
    job = await presets.plan_grounded(
        ctx=where[0],
        name=name,
        inputs=body.inputs,
        grounding=grounding,
        model=body.model,
        overrides=body.sampling_overrides(),
    )
    return await grounded.reply(job, grounding, service, where[1], stream=body.stream)
