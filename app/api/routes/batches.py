"""`/v1/batches`: create, retrieve, list and cancel batches (OpenAI's Batch API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from app.api.deps import BatchesDep, ClientDep
from app.api.http import json_response
from app.api.render.batches import batch_body, batch_list_body
from app.schemas.batches import BatchList, BatchObject, CreateBatchRequest

router = APIRouter(tags=["batches"])

BatchId = Annotated[str, Path(max_length=64)]


@router.post("/v1/batches", response_model=BatchObject)
async def create_batch(body: CreateBatchRequest, service: BatchesDep, client: ClientDep) -> Response:
    """Create a batch from an uploaded file of purpose `batch`; it starts `validating`."""
    batch = await service.create(
        client.key_id,
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        metadata=body.metadata,
        output_expires_seconds=body.output_expires_after.seconds if body.output_expires_after else None,
    )
    return json_response(batch_body(batch))


@router.get("/v1/batches/{batch_id}", response_model=BatchObject)
async def retrieve_batch(batch_id: BatchId, service: BatchesDep, client: ClientDep) -> Response:
    """A batch: its status, request counts, usage and, once done, its output and error files."""
    return json_response(batch_body(await service.get(client.key_id, batch_id)))


@router.get("/v1/batches", response_model=BatchList)
async def list_batches(
    service: BatchesDep,
    client: ClientDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The caller's batches, newest first (`after`: the last id of the previous page)."""
    batches, has_more = await service.list_batches(client.key_id, limit=limit, after=after)
    return json_response(batch_list_body(batches, has_more))


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(batch_id: BatchId, service: BatchesDep, client: ClientDep) -> Response:
    """Cancel a batch that is validating or in progress: it is `cancelling`, then `cancelled`
    with what ran in its files (409 once it is finalizing or done)."""
    return json_response(batch_body(await service.cancel(client.key_id, batch_id)))
