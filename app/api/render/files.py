"""`/v1/files` bodies, in OpenAI's shapes."""

from __future__ import annotations

from typing import Any

from app.services.apps.files import StoredFile


def file_body(stored: StoredFile) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": stored.id,
        "object": "file",
        "bytes": stored.bytes,
        "created_at": stored.created_at,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
    }
    if stored.expires_at is not None:
        body["expires_at"] = stored.expires_at
    return body


def file_list_body(files: list[StoredFile], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [file_body(f) for f in files],
        "first_id": files[0].id if files else None,
        "last_id": files[-1].id if files else None,
        "has_more": has_more,
    }


def file_deleted_body(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "deleted": True}
