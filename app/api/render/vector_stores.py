"""`/v1/vector_stores` bodies, in OpenAI's shapes."""

from __future__ import annotations

from typing import Any

from app.services.apps.vector_stores import FileBatch, StoreFile, VectorStore
from app.services.retrieval.index import Hit


def store_body(store: VectorStore) -> dict[str, Any]:
    return {
        "id": store.id,
        "object": "vector_store",
        "created_at": store.created_at,
        "name": store.name,
        "usage_bytes": store.usage_bytes,
        "file_counts": store.file_counts.as_dict(),
        "status": store.status,
        "expires_at": store.expires_at,
        "last_active_at": store.last_active_at,
        "metadata": store.metadata,
    } | (
        {"expires_after": {"anchor": "last_active_at", "days": store.expires_after_days}}
        if store.expires_after_days
        else {}
    )


def store_file_body(item: StoreFile) -> dict[str, Any]:
    return {
        "id": item.file_id,
        "object": "vector_store.file",
        "usage_bytes": item.usage_bytes,
        "created_at": item.created_at,
        "vector_store_id": item.store_id,
        "status": item.status,
        "last_error": item.last_error,
        "chunking_strategy": {
            "type": "static",
            "static": {"max_chunk_size_tokens": item.max_tokens, "chunk_overlap_tokens": item.overlap},
        },
        "attributes": item.attributes,
    }


def batch_body(batch: FileBatch) -> dict[str, Any]:
    status = batch.status
    return {
        "id": batch.id,
        "object": "vector_store.files_batch",
        "created_at": batch.created_at,
        "vector_store_id": batch.store_id,
        "status": "in_progress" if status == "cancelling" else status,
        "file_counts": batch.file_counts.as_dict(),
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def deleted_body(object_id: str, kind: str) -> dict[str, Any]:
    return {"id": object_id, "object": kind, "deleted": True}


def search_body(queries: list[str], hits: list[Hit]) -> dict[str, Any]:
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": [
            {
                "file_id": h.file_id,
                "filename": h.filename,
                "score": h.score,
                "attributes": h.attributes,
                "content": [{"type": "text", "text": h.text}],
            }
            for h in hits
        ],
        "has_more": False,
        "next_page": None,
    }


def content_body(texts: list[str]) -> dict[str, Any]:
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": t} for t in texts],
        "has_more": False,
        "next_page": None,
    }
