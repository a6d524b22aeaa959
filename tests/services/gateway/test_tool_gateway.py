"""Gateway features on tools and logprobs: tool schemas reserve prompt tokens, the cache keys on
tools / tool_choice / logprobs, redaction covers tool results and arguments (restored across
streamed argument fragments), records keep the calls, and streams never fall back after a
fragment was sent."""

from __future__ import annotations

import json
from typing import Any

import httpx
import respx
from sqlalchemy import select

from app.storage.tables import GenerationRecord
from tests import openai_mock as mock
from tests.access_helpers import bearer, chat_body, completion, create_key, keys_app, running
from tests.conftest import openai_settings
from tests.upstream_faults import Service, ok, sse_events

CHAT = "/v1/chat/completions"
EMAIL = "ann.lee@example.com"
BIG_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "search_orders",
        "description": "Search the customer's orders. " * 60,
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}
SMALL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_order",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    },
}


def call_chunk(index: int = 0, **fields: Any) -> dict[str, Any]:
    event = mock.chunk()
    event["choices"][0]["delta"] = {"tool_calls": [{"index": index, **fields}]}
    return event


async def test_tool_schemas_reserve_prompt_tokens(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion(prompt_tokens=10, completion_tokens=5))
    async with running(keys_app()) as client:
        reserved = []
        for tools in (None, [BIG_TOOL]):
            _, secret = await create_key(client, limits={"tokens_per_minute": 10_000})
            body = chat_body(max_tokens=20, **({"tools": tools} if tools else {}))
            r = await client.post(CHAT, json=body, headers=bearer(secret))
            assert r.status_code == 200, r.text
            reserved.append(10_000 - int(r.headers["x-ratelimit-remaining-tokens"]))
    # The description alone is about 300 tokens: the reservation grows by at least that much.
    assert reserved[1] - reserved[0] > 250


async def test_the_cache_keys_on_tools_tool_choice_and_logprobs(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok("Paris."))
    base = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}]}
    variants: list[dict[str, Any]] = [
        {},
        {"tools": [SMALL_TOOL]},
        {"tools": [SMALL_TOOL], "tool_choice": "required"},
        {"tools": [SMALL_TOOL], "tool_choice": "required", "parallel_tool_calls": False},
        {"logprobs": True},
        {"logprobs": True, "top_logprobs": 2},
    ]
    async with Service(openai_settings(cache_enabled=True)) as client:
        for variant in variants:
            r = await client.post(CHAT, json={**base, **variant, "temperature": 0})
            assert r.headers["x-cache"] == "miss", variant
        again = await client.post(CHAT, json={**base, **variants[2], "temperature": 0})
    assert again.headers["x-cache"] == "hit"
    assert calls.call_count == len(variants)


async def test_a_cached_tool_call_is_replayed_as_a_call(upstream: respx.MockRouter) -> None:
    answer = mock.completion("", finish_reason="tool_calls")
    answer["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": "{}"}}
        ],
    }
    upstream.post("/chat/completions").respond(json=answer)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Order?"}],
        "tools": [SMALL_TOOL],
        "temperature": 0,
    }
    async with Service(openai_settings(cache_enabled=True)) as client:
        first = await client.post(CHAT, json=body)
        streamed = await client.post(CHAT, json={**body, "stream": True})
    assert streamed.headers["x-cache"] == "hit"
    chunks = [e for e in sse_events(streamed.text) if e != "[DONE]"]
    fragments = [c for e in chunks for ch in e["choices"] for c in ch["delta"].get("tool_calls", [])]
    assert fragments[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_order", "arguments": ""},
    }
    assert "".join(f["function"].get("arguments", "") for f in fragments) == "{}"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert first.json()["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"


async def test_tool_results_and_arguments_are_redacted_and_restored_across_fragments(
    upstream: respx.MockRouter,
) -> None:
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        placeholder = next(p for p in ("[EMAIL_1]",) if p in json.dumps(body["messages"]))
        # The upstream echoes the placeholder back in the arguments, split across fragments.
        args = '{"to": "' + placeholder + '"}'
        return mock.sse_response(
            [
                mock.chunk(role=True),
                call_chunk(id="call_2", type="function", function={"name": "send_mail", "arguments": ""}),
                call_chunk(function={"arguments": args[:12]}),
                call_chunk(function={"arguments": args[12:]}),
                mock.chunk(finish_reason="tool_calls"),
                mock.usage_chunk(20, 8),
            ]
        )

    upstream.post("/chat/completions").mock(side_effect=answer)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": f'{{"email": "{EMAIL}"}}'},
    }
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "Mail my order status to me."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": f'{{"customer": "{EMAIL}"}}'},
        ],
        "tools": [SMALL_TOOL],
        "stream": True,
    }
    async with Service(openai_settings(privacy_mode="redact")) as client:
        r = await client.post(CHAT, json=body)
    assert EMAIL not in json.dumps(seen)
    chunks = [e for e in sse_events(r.text) if e != "[DONE]"]
    arguments = "".join(
        c["function"].get("arguments", "")
        for e in chunks
        for ch in e["choices"]
        for c in ch["delta"].get("tool_calls", [])
    )
    assert json.loads(arguments) == {"to": EMAIL}


async def test_a_stream_never_falls_back_after_a_call_fragment(upstream: respx.MockRouter) -> None:
    settings = openai_settings(
        models={
            "primary": {"provider": "openai", "upstream_model": "gpt-4o", "fallbacks": ["backup"]},
            "backup": {"provider": "openai", "upstream_model": "gpt-4o-mini"},
        }
    )
    route = upstream.post("/chat/completions").mock(
        side_effect=[
            mock.broken_sse_response(
                [
                    mock.chunk(role=True),
                    call_chunk(id="call_1", type="function", function={"name": "get_order", "arguments": ""}),
                ]
            ),
            ok("from the backup"),
        ]
    )
    body = {"model": "primary", "messages": [{"role": "user", "content": "Order?"}], "tools": [SMALL_TOOL]}
    async with Service(settings) as client:
        r = await client.post(CHAT, json={**body, "stream": True})
    events = sse_events(r.text)
    assert route.call_count == 1
    assert "error" in events[-2]
    assert events[-1] == "[DONE]"


async def test_records_keep_the_calls_and_the_tool_results(upstream: respx.MockRouter) -> None:
    answer = mock.completion("", finish_reason="tool_calls")
    answer["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_order", "arguments": '{"id": "B2"}'},
            }
        ],
    }
    upstream.post("/chat/completions").respond(json=answer)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_order", "arguments": '{"id": "A1"}'},
    }
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "Orders A1 and B2?"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "A1: shipped"},
        ],
        "tools": [SMALL_TOOL],
    }
    service = Service(openai_settings(store_text=True))
    async with service as client:
        r = await client.post(CHAT, json=body)
        assert r.status_code == 200, r.text
        state = service.app.state.genserve
        await state.records.flush()
        async with state.db.session() as session:
            row = (await session.execute(select(GenerationRecord))).scalars().one()
    assert row.finish_reason == "tool_calls"
    assert row.prompt[1]["tool_calls"] == [{"id": "call_1", "name": "get_order", "arguments": '{"id": "A1"}'}]
    assert row.prompt[2] == {"role": "tool", "content": "A1: shipped", "tool_call_id": "call_1"}
    assert row.output == [
        {"text": "", "tool_calls": [{"id": "call_2", "name": "get_order", "arguments": '{"id": "B2"}'}]}
    ]
