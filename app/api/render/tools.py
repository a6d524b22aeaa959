"""Tool calls in OpenAI's shape, shared by chat, `/v1/generate` bodies and conversations."""

from __future__ import annotations

from collections.abc import Iterable

from app.providers.base import ToolCall


def tool_calls(calls: Iterable[ToolCall]) -> list[dict[str, object]]:
    """`[{id, type: "function", function: {name, arguments}}]`."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]
