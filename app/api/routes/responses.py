"""The Responses API: `POST /v1/responses`, and retrieving, deleting and listing the input of
stored responses."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from app.api.admission import metered_per_job
from app.api.deps import ClientDep, CtxDep, ResponsesDep
from app.api.http import json_response
from app.api.openapi import stream_responses
from app.api.render.responses import deleted_body, input_items_body, response_body, response_stream
from app.api.streaming import sse_response, until_disconnected
from app.schemas.responses import (
    CreateResponseRequest,
    InputItemList,
    ResponseDeleted,
    ResponseObject,
    ResponseStreamEvent,
)

router = APIRouter(tags=["responses"])

ResponseId = Annotated[str, Path(max_length=64)]


@router.post("/v1/responses", response_model=ResponseObject, responses=stream_responses(ResponseStreamEvent))
@metered_per_job
async def create_response(
    body: CreateResponseRequest, ctx: CtxDep, service: ResponsesDep, request: Request
) -> Response:
    """Generate a response to the input (continuing `previous_response_id` when given), and
    store it unless `store` is false."""
    draft = await service.prepare(ctx, body)
    if body.stream:
        return await sse_response(service.stream(draft), response_stream(draft), request)
    result = await until_disconnected(request, service.complete(draft))
    return json_response(response_body(result))


@router.get("/v1/responses/{response_id}", response_model=ResponseObject)
async def get_response(response_id: ResponseId, service: ResponsesDep, client: ClientDep) -> Response:
    """A stored response, as it was returned."""
    return json_response(response_body(await service.get(client.key_id, response_id)))


@router.delete("/v1/responses/{response_id}", response_model=ResponseDeleted)
async def delete_response(response_id: ResponseId, service: ResponsesDep, client: ClientDep) -> Response:
    """Delete a stored response (the ones that continued it stay)."""
    await service.delete(client.key_id, response_id)
    return json_response(deleted_body(response_id))


@router.get("/v1/responses/{response_id}/input_items", response_model=InputItemList)
async def list_input_items(
    response_id: ResponseId,
    service: ResponsesDep,
    client: ClientDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The input items of a stored response, newest first by default."""
    page = await service.input_items(client.key_id, response_id, limit=limit, order=order, after=after)
    return json_response(input_items_body(page))
