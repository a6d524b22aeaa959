"""Wire models of `/v1/files` (for the OpenAPI document; bodies are rendered by app/api/render/files.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class FileObject(BaseModel):
    """An uploaded file, as OpenAI's `File` object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    """Unix time it expires (absent: kept until deleted or swept by retention)."""
    filename: str
    """The uploaded name, shown back; never used for anything else."""
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
