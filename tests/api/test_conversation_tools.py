"""A customer-service conversation with an order-lookup tool: the reply calls the tool, the
client posts the result, the next reply answers — stored as turns, continued on another replica,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from app.main import create_app
from tests.conftest import openai_settings

ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order",
        "description": "Look up an order by its id.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


class ToolUpstream:
    """Calls `get_order` when the last turn is the user's; answers from the result otherwise."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.requests: list[dict[str, Any]] = []
        router.post("/chat/completions").mock(side_effect=self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        last = body["messages"][-1]
        message: dict[str, Any]
        if last["role"] == "tool":
            message = {
                "role": "assistant",
                "content": f"Your order: {json.loads(last['content'])['status']}.",
            }
            finish = "stop"
        else:
            call = {
                "id": f"call_{len(self.requests)}",
                "type": "function",
                "function": {"name": "get_order", "arguments": '{"order_id": "A-1"}'},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49},
            },
        )


@pytest.fixture
def tool_upstream(upstream: respx.MockRouter) -> ToolUpstream:
    return ToolUpstream(upstream)


async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test", timeout=30) as c:
            yield c


async def post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int = 200
) -> dict[str, Any]:
    r = await client.post(path, json=body)
    assert r.status_code == status, r.text
    return dict(r.json())


async def test_an_order_lookup_round_trip_across_replicas(
    database_url: str, tool_upstream: ToolUpstream
) -> None:
    one = running(create_app(openai_settings(database_url=database_url)))
    two = running(create_app(openai_settings(database_url=database_url)))
    a, b = await anext(one), await anext(two)
    try:
        created = await post(
            a, "/v1/conversations", {"system": "You are Acme's support agent.", "tools": [ORDER_TOOL]}
        )
        assert created["tools"] == [ORDER_TOOL]
        path = f"/v1/conversations/{created['id']}/messages"
        first = await post(a, path, {"content": "Where is my order A-1?"})
        choice = first["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        [call] = choice["tool_calls"]
        assert call["function"] == {"name": "get_order", "arguments": '{"order_id": "A-1"}'}
        assert tool_upstream.requests[0]["tools"] == [ORDER_TOOL]

        # The client forgets to answer the call: the conversation says what it waits for.
        refused = await post(b, path, {"content": "Hello?"}, status=400)
        assert refused["error"]["param"] == "tool_results"
        wrong = await post(
            b, path, {"tool_results": [{"tool_call_id": "call_9", "content": "{}"}]}, status=400
        )
        assert wrong["error"]["param"] == "tool_results[0].tool_call_id"

        result = {"tool_call_id": call["id"], "content": '{"status": "shipped"}'}
        second = await post(b, path, {"tool_results": [result]})
        assert second["text"] == "Your order: shipped."
        assert second["choices"][0]["finish_reason"] == "stop"
        sent = tool_upstream.requests[-1]["messages"]
        assert sent[-2:] == [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": call["id"]},
        ]

        page = (await a.get(f"/v1/conversations/{created['id']}")).json()
        assert [(m["role"], m.get("tool_call_id")) for m in page["messages"]] == [
            ("user", None),
            ("assistant", None),
            ("tool", call["id"]),
            ("assistant", None),
        ]
        assert page["messages"][1]["tool_calls"] == [call]
        assert page["messages"][1]["finish_reason"] == "tool_calls"
        assert page["messages"][3]["content"] == "Your order: shipped."
    finally:
        for gen in (one, two):
            await gen.aclose()


async def test_tool_choice_needs_the_conversations_tools(
    database_url: str, tool_upstream: ToolUpstream
) -> None:
    async for client in running(create_app(openai_settings(database_url=database_url))):
        plain = await post(client, "/v1/conversations", {})
        path = f"/v1/conversations/{plain['id']}/messages"
        error = await post(client, path, {"content": "Hi", "tool_choice": "required"}, status=400)
        assert error["error"]["param"] == "tool_choice"
        both = await post(client, path, {"content": "Hi", "tool_results": []}, status=400)
        assert both["error"]["type"] == "invalid_request_error"
        bad = await post(client, "/v1/conversations", {"tools": [ORDER_TOOL, ORDER_TOOL]}, status=400)
        assert bad["error"]["param"] == "tools"
