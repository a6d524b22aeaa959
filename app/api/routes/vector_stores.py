"""`/v1/vector_stores`: stores, their files, file batches and search (OpenAI's Vector Stores API)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from app.api.deps import ClientDep, CtxDep, VectorStoresDep
from app.api.http import json_response
from app.api.render.vector_stores import (
    batch_body,
    content_body,
    deleted_body,
    page,
    search_body,
    store_body,
    store_file_body,
)
from app.schemas.vector_stores import (
    AUTO_CHUNKING,
    ChunkingStrategy,
    CreateVectorStoreFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    UpdateVectorStoreFileAttributesRequest,
    UpdateVectorStoreRequest,
    VectorStoreSearchRequest,
)
from app.services.apps.vector_stores import Attach, SearchSpec


async def _installed(service: VectorStoresDep) -> None:
    service.require()


router = APIRouter(prefix="/v1/vector_stores", tags=["vector stores"], dependencies=[Depends(_installed)])

StoreId = Annotated[str, Path(max_length=64)]
FileId = Annotated[str, Path(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=64)]


def _attach(file_id: str, attributes: dict[str, Any] | None, strategy: ChunkingStrategy | None) -> Attach:
    size, overlap = (strategy or AUTO_CHUNKING).sizes()
    return Attach(file_id=file_id, attributes=dict(attributes or {}), max_tokens=size, overlap=overlap)


@router.post("")
async def create_vector_store(
    body: CreateVectorStoreRequest, service: VectorStoresDep, client: ClientDep
) -> Response:
    """Create a store, attaching `file_ids` (ingested in the background)."""
    if body.chunking_strategy is not None:
        body.chunking_strategy.sizes()  # a strategy is checked even with no files to chunk
    store = await service.create(
        client.key_id,
        name=body.name,
        description=body.description,
        metadata=body.metadata,
        expires_after_days=body.expires_after.days if body.expires_after else None,
        attach=[_attach(f, None, body.chunking_strategy) for f in body.file_ids],
    )
    return json_response(store_body(store))


@router.get("")
async def list_vector_stores(
    service: VectorStoresDep,
    client: ClientDep,
    limit: Limit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Cursor = None,
    before: Cursor = None,
) -> Response:
    stores, more = await service.list_stores(
        client.key_id, limit=limit, order=order, after=after, before=before
    )
    return json_response(page([store_body(s) for s in stores], more))


@router.get("/{vector_store_id}")
async def retrieve_vector_store(
    vector_store_id: StoreId, service: VectorStoresDep, client: ClientDep
) -> Response:
    return json_response(store_body(await service.get(client.key_id, vector_store_id)))


@router.post("/{vector_store_id}")
async def modify_vector_store(
    vector_store_id: StoreId, body: UpdateVectorStoreRequest, service: VectorStoresDep, client: ClientDep
) -> Response:
    expires: int | bool | None = False
    if "expires_after" in body.model_fields_set:
        expires = body.expires_after.days if body.expires_after else None
    store = await service.modify(
        client.key_id, vector_store_id, name=body.name, metadata=body.metadata, expires_after_days=expires
    )
    return json_response(store_body(store))


@router.delete("/{vector_store_id}")
async def delete_vector_store(
    vector_store_id: StoreId, service: VectorStoresDep, client: ClientDep
) -> Response:
    await service.delete(client.key_id, vector_store_id)
    return json_response(deleted_body(vector_store_id, "vector_store.deleted"))


@router.post("/{vector_store_id}/files")
async def create_vector_store_file(
    vector_store_id: StoreId, body: CreateVectorStoreFileRequest, service: VectorStoresDep, client: ClientDep
) -> Response:
    attached = await service.attach(
        client.key_id, vector_store_id, _attach(body.file_id, body.attributes, body.chunking_strategy)
    )
    return json_response(store_file_body(attached))


FileStatus = Literal["in_progress", "completed", "failed", "cancelled"]


@router.get("/{vector_store_id}/files")
async def list_vector_store_files(
    vector_store_id: StoreId,
    service: VectorStoresDep,
    client: ClientDep,
    limit: Limit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Cursor = None,
    filter: FileStatus | None = None,
) -> Response:
    files, more = await service.list_files(
        client.key_id, vector_store_id, limit=limit, order=order, after=after, status=filter
    )
    return json_response(page([store_file_body(f) for f in files], more))


@router.get("/{vector_store_id}/files/{file_id}")
async def retrieve_vector_store_file(
    vector_store_id: StoreId, file_id: FileId, service: VectorStoresDep, client: ClientDep
) -> Response:
    return json_response(store_file_body(await service.get_file(client.key_id, vector_store_id, file_id)))


@router.post("/{vector_store_id}/files/{file_id}")
async def update_vector_store_file(
    vector_store_id: StoreId,
    file_id: FileId,
    body: UpdateVectorStoreFileAttributesRequest,
    service: VectorStoresDep,
    client: ClientDep,
) -> Response:
    updated = await service.update_attributes(
        client.key_id, vector_store_id, file_id, dict(body.attributes or {})
    )
    return json_response(store_file_body(updated))


@router.delete("/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(
    vector_store_id: StoreId, file_id: FileId, service: VectorStoresDep, client: ClientDep
) -> Response:
    await service.detach(client.key_id, vector_store_id, file_id)
    return json_response(deleted_body(file_id, "vector_store.file.deleted"))


@router.get("/{vector_store_id}/files/{file_id}/content")
async def vector_store_file_content(
    vector_store_id: StoreId, file_id: FileId, service: VectorStoresDep, client: ClientDep
) -> Response:
    """The file's parsed chunks, in order."""
    return json_response(content_body(await service.file_content(client.key_id, vector_store_id, file_id)))


@router.post("/{vector_store_id}/file_batches")
async def create_file_batch(
    vector_store_id: StoreId,
    body: CreateVectorStoreFileBatchRequest,
    service: VectorStoresDep,
    client: ClientDep,
) -> Response:
    items = [_attach(e.file_id, e.attributes, e.chunking_strategy) for e in body.entries()]
    return json_response(batch_body(await service.create_batch(client.key_id, vector_store_id, items)))


@router.get("/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_file_batch(
    vector_store_id: StoreId, batch_id: FileId, service: VectorStoresDep, client: ClientDep
) -> Response:
    return json_response(batch_body(await service.get_batch(client.key_id, vector_store_id, batch_id)))


@router.post("/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_file_batch(
    vector_store_id: StoreId, batch_id: FileId, service: VectorStoresDep, client: ClientDep
) -> Response:
    return json_response(batch_body(await service.cancel_batch(client.key_id, vector_store_id, batch_id)))


@router.get("/{vector_store_id}/file_batches/{batch_id}/files")
async def list_file_batch_files(
    vector_store_id: StoreId,
    batch_id: FileId,
    service: VectorStoresDep,
    client: ClientDep,
    limit: Limit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Cursor = None,
    filter: FileStatus | None = None,
) -> Response:
    await service.get_batch(client.key_id, vector_store_id, batch_id)
    files, more = await service.list_files(
        client.key_id,
        vector_store_id,
        limit=limit,
        order=order,
        after=after,
        status=filter,
        batch_id=batch_id,
    )
    return json_response(page([store_file_body(f) for f in files], more))


@router.post("/{vector_store_id}/search")
async def search_vector_store(
    vector_store_id: StoreId, body: VectorStoreSearchRequest, service: VectorStoresDep, ctx: CtxDep
) -> Response:
    """The passages that best answer `query`: keyword and vector rankings fused."""
    ranking = body.ranking_options
    hybrid = ranking.hybrid_search if ranking else None
    spec = SearchSpec(
        query=body.query,
        max_num_results=body.max_num_results,
        filters=body.filters.model_dump() if body.filters is not None else None,
        ranker=ranking.ranker if ranking else "auto",
        score_threshold=ranking.score_threshold if ranking else 0.0,
        embedding_weight=hybrid.embedding_weight if hybrid else None,
        text_weight=hybrid.text_weight if hybrid else None,
        rewrite_query=body.rewrite_query,
    )
    hits = await service.search(ctx, [vector_store_id], spec)
    return json_response(search_body(spec.queries, hits))
