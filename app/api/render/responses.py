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
from app.services.apps.responses import Draft, InputItemsPage, StoredResponse


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
        # Responses stored before `text` and `truncation` were served have neither: they were
        # plain text, and their history was fitted.
        "text": params.get("text", {"format": {"type": "text"}}),
        "tool_choice": params["tool_choice"],
        "tools": params["tools"],
        "top_p": params["top_p"],
        "truncation": params.get("truncation", "auto"),
        "metadata": params["metadata"],
    }
    if usage is not None:  # absent while in progress: the schema has no null usage
        body["usage"] = {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens,
        }
    if params["user"] is not None:
        body["user"] = params["user"]  # a string when present, never null
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
    """Turns the service's chunks and finished response into the documented event sequence:
    output items are numbered in the order they appear (the answer's text, then its calls)."""
    sequence = 0
    opened = False
    positions: dict[str, int] = {}
    """Output item id → its `output_index`, in the order the items were added."""
    arguments: dict[str, list[str]] = {}

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        payload = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return _event(kind, payload)

    def where(item_id: str) -> dict[str, Any]:
        return {"item_id": item_id, "output_index": positions[item_id], "content_index": 0}

    def open_message() -> list[bytes]:
        item_id = draft.message_id
        positions[item_id] = len(positions)
        item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            event("response.output_item.added", output_index=positions[item_id], item=item),
            event("response.content_part.added", **where(item_id), part=part),
        ]

    def open_call(item_id: str, call_id: str, name: str) -> bytes:
        positions[item_id] = len(positions)
        arguments[item_id] = []
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        return event("response.output_item.added", output_index=positions[item_id], item=item)

    def searched() -> list[bytes]:
        """The file_search call, which ran before the model answered: it comes first."""
        assert draft.search is not None
        item = draft.search.item()
        item_id = item["id"]
        positions[item_id] = len(positions)
        at = {"item_id": item_id, "output_index": positions[item_id]}
        return [
            event(
                "response.output_item.added",
                output_index=positions[item_id],
                item=item | {"status": "in_progress", "results": None},
            ),
            event("response.file_search_call.in_progress", **at),
            event("response.file_search_call.searching", **at),
            event("response.file_search_call.completed", **at),
            event("response.output_item.done", output_index=positions[item_id], item=item),
        ]

    def finish(response: StoredResponse) -> list[bytes]:
        frames: list[bytes] = []
        for item in response.output:
            item_id = item["id"]
            if item["type"] == "file_search_call":
                continue  # sent when the stream opened
            if item["type"] == "message":
                if item_id not in positions:
                    frames += open_message()
                part = item["content"][0]
                frames.append(
                    event("response.output_text.done", **where(item_id), text=part["text"], logprobs=[])
                )
                frames += [
                    event(
                        "response.output_text.annotation.added",
                        **where(item_id),
                        annotation_index=n,
                        annotation=annotation,
                    )
                    for n, annotation in enumerate(part["annotations"])
                ]
                frames.append(event("response.content_part.done", **where(item_id), part=part))
            else:
                if item_id not in positions:
                    frames.append(open_call(item_id, item["call_id"], item["name"]))
                sent = "".join(arguments[item_id])
                if item["arguments"] != sent:
                    rest = item["arguments"].removeprefix(sent)
                    frames.append(
                        event(
                            "response.function_call_arguments.delta",
                            item_id=item_id,
                            output_index=positions[item_id],
                            delta=rest,
                        )
                    )
                frames.append(
                    event(
                        "response.function_call_arguments.done",
                        item_id=item_id,
                        output_index=positions[item_id],
                        name=item["name"],
                        arguments=item["arguments"],
                    )
                )
            frames.append(event("response.output_item.done", output_index=positions[item_id], item=item))
        kind = "response.completed" if response.status == "completed" else "response.incomplete"
        frames.append(event(kind, response=response_body(response)))
        return frames

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
            if draft.search is not None:
                frames += searched()
        if isinstance(item, StoredResponse):
            return frames + finish(item)
        if item.index != 0:
            return frames
        if item.text:
            if draft.message_id not in positions:
                frames += open_message()
            frames.append(
                event("response.output_text.delta", **where(draft.message_id), delta=item.text, logprobs=[])
            )
        for call in item.tool_calls:
            item_id = draft.call_item_id(call.index)
            if item_id not in positions:
                frames.append(open_call(item_id, call.id or "", call.name or ""))
            if call.arguments:
                arguments[item_id].append(call.arguments)
                frames.append(
                    event(
                        "response.function_call_arguments.delta",
                        item_id=item_id,
                        output_index=positions[item_id],
                        delta=call.arguments,
                    )
                )
        return frames

    return render
