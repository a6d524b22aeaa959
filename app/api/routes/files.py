"""`/v1/files`: upload, list, retrieve, download and delete files (OpenAI's Files API)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, UploadFile
from fastapi.responses import Response

from app.api.admission import require_admin
from app.api.deps import ClientDep, FilesDep
from app.api.http import json_response
from app.api.render.files import file_body, file_deleted_body, file_list_body
from app.errors import PayloadTooLarge
from app.schemas.files import FileDeleted, FileList, FileObject
from app.services.apps.files import MAX_EXPIRY, MIN_EXPIRY, UploadPurpose

router = APIRouter(tags=["files"])

FileId = Annotated[str, Path(max_length=64)]


@router.post("/v1/files", response_model=FileObject)
async def upload_file(
    file: UploadFile,
    purpose: Annotated[UploadPurpose, Form()],
    service: FilesDep,
    client: ClientDep,
    expires_after_anchor: Annotated[
        Literal["created_at"], Form(alias="expires_after[anchor]")
    ] = "created_at",
    # Absent means no expiry; the document shows an integer (a form field has no null).
    expires_after_seconds: Annotated[
        int, Form(alias="expires_after[seconds]", ge=MIN_EXPIRY, le=MAX_EXPIRY)  # noqa: RUF013
    ] = None,  # type: ignore[assignment]
) -> Response:
    """Upload a file (multipart: `file`, `purpose`, optional `expires_after[anchor]=created_at`
    and `expires_after[seconds]`)."""
    service.check_upload(purpose, expires_after_seconds)
    if file.size is not None and file.size > service.max_bytes:
        raise PayloadTooLarge(f"The file is larger than {service.max_bytes} bytes.", param="file")
    content = await file.read(service.max_bytes + 1)
    stored = await service.create(
        client.key_id,
        filename=file.filename or "upload",
        content=content,
        purpose=purpose,
        content_type=file.content_type,
        expires_after_seconds=expires_after_seconds,
    )
    return json_response(file_body(stored))


@router.get("/v1/files", response_model=FileList)
async def list_files(
    service: FilesDep,
    client: ClientDep,
    purpose: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The caller's files, newest first by default."""
    files, has_more = await service.list_files(
        client.key_id, purpose=purpose, limit=limit, order=order, after=after
    )
    return json_response(file_list_body(files, has_more))


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: FileId, service: FilesDep, client: ClientDep) -> Response:
    return json_response(file_body(await service.get(client.key_id, file_id)))


@router.get(
    "/v1/files/{file_id}/content",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def file_content(file_id: FileId, service: FilesDep, client: ClientDep) -> Response:
    """The file's bytes, as uploaded (always `application/octet-stream`: the stored content type
    is the uploader's claim, and serving it could make a browser run the file)."""
    content = await service.content(client.key_id, file_id)
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"x-content-type-options": "nosniff", "content-disposition": "attachment"},
    )


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: FileId, service: FilesDep, client: ClientDep) -> Response:
    await service.delete(client.key_id, file_id)
    return json_response(file_deleted_body(file_id))


admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@admin_router.get("/files", response_model=FileList)
async def list_every_file(
    service: FilesDep,
    purpose: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Every key's files (each with its `owner`), for the operator."""
    files, has_more = await service.list_files(None, purpose=purpose, limit=limit, order=order, after=after)
    body = file_list_body(files, has_more)
    for item, stored in zip(body["data"], files, strict=True):
        item["owner"] = stored.owner
    return json_response(body)
