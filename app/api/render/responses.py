"""Bodies and stream events of the Responses API, in OpenAI's shapes.

A stream goes `response.created`, `response.in_progress`, then for the answer's message
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`…,
`response.output_text.done`, `response.content_part.done`, `response.output_item.done`, and
ends with `response.completed` (or `response.incomplete` when `max_output_tokens` cut it),
every event numbered by `sequence_number`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from app.providers.base import Chunk
from app.services.responses import Draft, InputItemsPage, StoredResponse


def response_body(response: StoredResponse) -> dict[str, Any]:
    params = response.params
    usage = response.usage
    body: dict[str, Any] = {
        "id": response.id,
        "object": "response",
        "created_at": response.created_at,
        "status": response.status,
        "error": None,
        "incomplete_details": (
            {"reason": response.incomplete_reason} if response.incomplete_reason is not None else None
        ),
        "instructions": params["instructions"],
        "max_output_tokens": params["max_output_tokens"],
        "model": response.model,
        "output": response.output,
        "parallel_tool_calls": params["parallel_tool_calls"],
        "previous_response_id": response.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": params["store"],
        "temperature": params["temperature"],
        "text": {"format": {"type": "text"}},
        "tool_choice": params["tool_choice"],
        "tools": params["tools"],
        "top_p": params["top_p"],
        "truncation": "disabled",
        "usage": (
            {
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.total_tokens,
            }
            if usage is not None
            else None
        ),
        "user": params["user"],
        "metadata": params["metadata"],
    }
    if response.details:
        # This service's own facts, beside OpenAI's fields (`metadata` is the client's own).
        body.update(
            {
                "provider": response.details.get("provider"),
                "sampling": response.details.get("sampling"),
                "timings": response.details.get("timings"),
                "service_metadata": response.details.get("metadata", {}),
            }
        )
    return body


def input_items_body(page: InputItemsPage) -> dict[str, Any]:
    return {
        "object": "list",
        "data": page.items,
        "first_id": page.items[0]["id"] if page.items else None,
        "last_id": page.items[-1]["id"] if page.items else None,
        "has_more": page.has_more,
    }


def deleted_body(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response.deleted", "deleted": True}


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def response_stream(draft: Draft) -> Callable[[Chunk | StoredResponse], list[bytes]]:
    """Turns the service's chunks and finished response into the documented event sequence."""
    sequence = 0
    opened = False
    message_open = False
    text: list[str] = []
    item_id = draft.message_id
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        payload = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return _event(kind, payload)

    def open_message(status: str) -> list[bytes]:
        nonlocal message_open
        message_open = True
        item = {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            event("response.output_item.added", output_index=0, item=item),
            event("response.content_part.added", **where, part=part),
        ]

    def render(item: Chunk | StoredResponse) -> list[bytes]:
        nonlocal opened
        frames: list[bytes] = []
        if not opened:
            opened = True
            skeleton = response_body(draft.in_progress())
            frames += [
                event("response.created", response=skeleton),
                event("response.in_progress", response=skeleton),
            ]
        if isinstance(item, StoredResponse):
            if not message_open:
                frames += open_message("in_progress")
            message = item.output[0]
            full = message["content"][0]["text"]
            frames += [
                event("response.output_text.done", **where, text=full, logprobs=[]),
                event("response.content_part.done", **where, part=message["content"][0]),
                event("response.output_item.done", output_index=0, item=message),
                event(
                    "response.completed" if item.status == "completed" else "response.incomplete",
                    response=response_body(item),
                ),
            ]
            return frames
        if item.text and item.index == 0:
            if not message_open:
                frames += open_message("in_progress")
            text.append(item.text)
            frames.append(event("response.output_text.delta", **where, delta=item.text, logprobs=[]))
        return frames

    return render
