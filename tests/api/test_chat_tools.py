"""Tools, logprobs and the strict stream shapes on `/v1/chat/completions`, driven by the official
SDK (its stream helpers included) against a fake upstream and against the embedded model."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import respx

from app.main import create_app
from tests import openai_mock as mock
from tests.api.test_contract_sdk import (
    LOCAL,
    REMOTE,
    async_client,
    check_chunk,
    check_completion,
    conforms,
    remote,
    sync_client,
)
from tests.conftest import UPSTREAM, _client, openai_settings
from tests.sse import events

__all__ = ["async_client", "remote", "sync_client"]  # fixtures

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^[A-Z]-[0-9]{4}$"},
        "include_items": {"type": "boolean"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["order_id", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look up a customer's order by its id.",
            "parameters": ORDER_SCHEMA,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
]
ASK: list[Any] = [{"role": "user", "content": "Where is my order B-1234?"}]


def upstream_chat(router: respx.MockRouter) -> respx.Route:
    return router.post(f"{UPSTREAM}/chat/completions")


def sent(route: respx.Route) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


def call_chunk(index: int = 0, **fields: Any) -> dict[str, Any]:
    event = mock.chunk()
    event["choices"][0]["delta"] = {"tool_calls": [{"index": index, **fields}]}
    return event


# -- through a fake upstream ---------------------------------------------------------------------


def test_tools_go_upstream_and_the_calls_come_back(
    sync_client: openai.OpenAI, remote: respx.MockRouter
) -> None:
    answer = mock.completion("", finish_reason="tool_calls")
    answer["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_order", "arguments": '{"order_id": "B-1234"}'},
            }
        ],
    }
    route = upstream_chat(remote).respond(json=answer)
    raw = sync_client.chat.completions.with_raw_response.create(
        model=REMOTE,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_order"}},
        parallel_tool_calls=False,
    )
    completion = check_completion(raw.http_response.json())
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "get_order",
        '{"order_id": "B-1234"}',
    )
    body = sent(route)
    assert body["tools"] == TOOLS
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_order"}}
    assert body["parallel_tool_calls"] is False


async def test_the_sdk_stream_helper_assembles_streamed_upstream_calls(
    async_client: openai.AsyncOpenAI, remote: respx.MockRouter
) -> None:
    upstream_chat(remote).mock(
        return_value=mock.sse_response(
            [
                mock.chunk(role=True),
                call_chunk(id="call_7", type="function", function={"name": "get_order", "arguments": ""}),
                call_chunk(function={"arguments": '{"order_'}),
                call_chunk(function={"arguments": 'id": "B-1234"}'}),
                call_chunk(
                    1, id="call_8", type="function", function={"name": "get_weather", "arguments": ""}
                ),
                call_chunk(1, function={"arguments": '{"city": "Oslo"}'}),
                mock.chunk(finish_reason="tool_calls"),
                mock.usage_chunk(30, 12),
            ]
        )
    )
    deltas: list[str] = []
    done: list[tuple[str, str]] = []
    async with async_client.chat.completions.stream(
        model=REMOTE, messages=ASK, tools=TOOLS, stream_options={"include_usage": True}
    ) as stream:
        async for event in stream:
            if event.type == "chunk":
                check_chunk(event.chunk)
            elif event.type == "tool_calls.function.arguments.delta":
                deltas.append(event.arguments_delta)
            elif event.type == "tool_calls.function.arguments.done":
                done.append((event.name, event.arguments))
        final = await stream.get_final_completion()
    assert done == [("get_order", '{"order_id": "B-1234"}'), ("get_weather", '{"city": "Oslo"}')]
    assert "".join(deltas) == '{"order_id": "B-1234"}{"city": "Oslo"}'
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.id, c.function.name) for c in choice.message.tool_calls or []] == [
        ("call_7", "get_order"),
        ("call_8", "get_weather"),
    ]
    assert final.usage is not None
    assert final.usage.total_tokens == 42


def test_a_tool_result_goes_upstream_in_openais_shape(
    sync_client: openai.OpenAI, remote: respx.MockRouter
) -> None:
    route = upstream_chat(remote).respond(json=mock.completion("It ships tomorrow."))
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_order", "arguments": '{"order_id": "B-1234"}'},
    }
    completion = sync_client.chat.completions.create(
        model=REMOTE,
        messages=[
            *ASK,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
        ],
        tools=TOOLS,
    )
    assert completion.choices[0].message.content == "It ships tomorrow."
    messages = sent(route)["messages"]
    assert messages[1] == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert messages[2] == {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": "call_1"}


def _logprobs(tokens: list[tuple[str, float]]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t,
                "logprob": lp,
                "bytes": list(t.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}],
            }
            for t, lp in tokens
        ],
        "refusal": None,
    }


def test_logprobs_go_upstream_and_come_back(sync_client: openai.OpenAI, remote: respx.MockRouter) -> None:
    answer = mock.completion("Hi there")
    answer["choices"][0]["logprobs"] = _logprobs([("Hi", -0.1), (" there", -0.5)])
    route = upstream_chat(remote).respond(json=answer)
    raw = sync_client.chat.completions.with_raw_response.create(
        model=REMOTE, messages=ASK, logprobs=True, top_logprobs=1
    )
    completion = check_completion(raw.http_response.json())
    content = completion.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    assert [(t.token, t.logprob) for t in content] == [("Hi", -0.1), (" there", -0.5)]
    assert content[1].bytes == list(b" there")
    assert [a.token for a in content[0].top_logprobs] == ["Hi"]
    body = sent(route)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 1)


async def test_streamed_logprobs_come_back_in_each_chunk(
    async_client: openai.AsyncOpenAI, remote: respx.MockRouter
) -> None:
    first, second = mock.chunk("Hi"), mock.chunk(" there")
    first["choices"][0]["logprobs"] = _logprobs([("Hi", -0.1)])
    second["choices"][0]["logprobs"] = _logprobs([(" there", -0.5)])
    upstream_chat(remote).mock(
        return_value=mock.sse_response(
            [mock.chunk("", role=True), first, second, mock.chunk(finish_reason="stop")]
        )
    )
    stream = await async_client.chat.completions.create(
        model=REMOTE, messages=ASK, logprobs=True, stream=True
    )
    tokens = []
    async for chunk in stream:
        check_chunk(chunk)
        if chunk.choices and chunk.choices[0].logprobs is not None:
            tokens += [t.token for t in chunk.choices[0].logprobs.content or []]
    assert tokens == ["Hi", " there"]


async def test_include_usage_puts_usage_null_on_every_chunk_but_the_last(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=mock.sse_response([*mock.text_chunks("Hel", "lo"), mock.usage_chunk(6, 2)])
    )
    r = await openai_client.post(
        "/v1/chat/completions",
        json={"model": REMOTE, "messages": ASK, "stream": True, "stream_options": {"include_usage": True}},
    )
    chunks = [e for e in events(r.text) if e != "[DONE]"]
    assert len(chunks) >= 3
    for chunk in chunks[:-1]:
        assert "usage" in chunk
        assert chunk["usage"] is None
        conforms("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["usage"]["total_tokens"] == 8
    assert chunks[-1]["choices"] == []


async def test_without_include_usage_no_chunk_has_a_usage_field(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=mock.sse_response(mock.text_chunks("Hi")))
    r = await openai_client.post(
        "/v1/chat/completions", json={"model": REMOTE, "messages": ASK, "stream": True}
    )
    assert all("usage" not in e for e in events(r.text) if e != "[DONE]")


async def test_image_parts_reach_a_vision_route_only(upstream: respx.MockRouter) -> None:
    settings = openai_settings(
        models={"eyes": {"provider": "openai", "vision": True}, "blind": {"provider": "openai"}}
    )
    route = upstream.post("/chat/completions").respond(json=mock.completion("A cat."))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}]
    async for client in _client(create_app(settings)):
        r = await client.post("/v1/chat/completions", json={"model": "eyes", "messages": messages})
        assert r.status_code == 200, r.text
        assert sent(route)["messages"][0]["content"] == [{"type": "text", "text": "What is this?"}, image]
        r = await client.post("/v1/chat/completions", json={"model": "blind", "messages": messages})
        assert r.status_code == 400
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("messages[0].content[1]", "image_not_supported")
        assert route.call_count == 1


# -- the embedded model --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_named_tool_call_on_the_embedded_model_validates_against_its_schema(
    sync_client: openai.OpenAI,
) -> None:
    raw = sync_client.chat.completions.with_raw_response.create(
        model=LOCAL,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_order"}},
        max_tokens=60,
        seed=5,
    )
    completion = check_completion(raw.http_response.json())
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_order"
    assert call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), ORDER_SCHEMA)


@pytest.mark.slow
async def test_required_streams_a_call_the_sdk_helper_assembles(async_client: openai.AsyncOpenAI) -> None:
    fragments: list[dict[str, Any]] = []
    async with async_client.chat.completions.stream(
        model=LOCAL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=60, seed=11
    ) as stream:
        async for event in stream:
            if event.type == "chunk":
                check_chunk(event.chunk)
                for choice in event.chunk.choices:
                    fragments += [c.to_dict() for c in choice.delta.tool_calls or []]
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name in ("get_order", "get_weather")
    schema = ORDER_SCHEMA if call.function.name == "get_order" else TOOLS[1]["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)
    # OpenAI's order: id, type and name first with empty arguments, then the arguments.
    assert fragments[0] == {
        "index": 0,
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": ""},
    }
    assert "".join(f["function"].get("arguments", "") for f in fragments[1:]) == call.function.arguments
    assert len(fragments) > 3, "the arguments arrive as the model writes them, not in one piece"


@pytest.mark.slow
def test_a_tool_result_round_trip_on_the_embedded_model(sync_client: openai.OpenAI) -> None:
    first = sync_client.chat.completions.create(
        model=LOCAL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=60, seed=2
    )
    message = first.choices[0].message
    assert message.tool_calls
    call = message.tool_calls[0]
    history: list[Any] = [
        *ASK,
        message.model_dump(exclude_none=True, exclude={"refusal"}),
        {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped", "arrives": "Friday"}'},
    ]
    second = sync_client.chat.completions.create(
        model=LOCAL, messages=history, tools=TOOLS, tool_choice="none", max_tokens=40, seed=2
    )
    answer = second.choices[0]
    assert answer.finish_reason in ("stop", "length")
    assert answer.message.tool_calls is None
    assert answer.message.content


@pytest.mark.slow
def test_embedded_logprobs_join_back_to_the_content(sync_client: openai.OpenAI) -> None:
    raw = sync_client.chat.completions.with_raw_response.create(
        model=LOCAL, messages=ASK, logprobs=True, top_logprobs=3, max_tokens=20, temperature=0, seed=1
    )
    completion = check_completion(raw.http_response.json())
    choice = completion.choices[0]
    assert choice.logprobs is not None
    tokens = choice.logprobs.content or []
    assert tokens
    assert "".join(t.token for t in tokens) == choice.message.content
    for token in tokens:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 3
        # Greedy decoding takes the likeliest token, which is the first alternative.
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)
        assert bytes(token.bytes or []).decode(errors="replace")


@pytest.mark.slow
async def test_embedded_logprobs_stream_with_their_text(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(
        model=LOCAL, messages=ASK, logprobs=True, max_tokens=12, seed=4, stream=True
    )
    text, tokens = "", ""
    async for chunk in stream:
        check_chunk(chunk)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            logprobs = choice.logprobs.content or [] if choice.logprobs else []
            piece = "".join(t.token for t in logprobs)
            assert piece == (choice.delta.content or "")
            tokens += piece
    assert text
    assert tokens == text


@pytest.mark.slow
async def test_generate_returns_logprobs_per_choice(local_client: httpx.AsyncClient) -> None:
    r = await local_client.post(
        "/v1/generate",
        json={
            "prompt": "Name a colour.",
            "max_tokens": 8,
            "n": 2,
            "seed": 3,
            "logprobs": True,
            "top_logprobs": 2,
        },
    )
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        assert "".join(t["token"] for t in choice["logprobs"]) == choice["text"]
        assert all(len(t["top_logprobs"]) == 2 for t in choice["logprobs"])
    plain = await local_client.post("/v1/generate", json={"prompt": "Hi", "max_tokens": 3})
    assert "logprobs" not in plain.json()["choices"][0]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_auto_on_the_embedded_model_gives_text_or_a_valid_call(sync_client: openai.OpenAI, seed: int) -> None:
    """With `auto` the model's first token chooses; either way the answer is well formed."""
    choice = sync_client.chat.completions.create(
        model=LOCAL, messages=ASK, tools=TOOLS, tool_choice="auto", max_tokens=40, seed=seed, temperature=1.0
    ).choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        schema = ORDER_SCHEMA if call.function.name == "get_order" else TOOLS[1]["function"]["parameters"]
        jsonschema.validate(json.loads(call.function.arguments), schema)
    else:
        assert choice.finish_reason in ("stop", "length")
        assert choice.message.content
        assert not choice.message.content.lstrip().startswith("{")


@pytest.mark.slow
def test_none_on_the_embedded_model_answers_in_text(sync_client: openai.OpenAI) -> None:
    choice = sync_client.chat.completions.create(
        model=LOCAL, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=20, seed=1
    ).choices[0]
    assert choice.message.tool_calls is None
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [".", " the", "\n"])
def test_embedded_logprobs_still_join_when_a_stop_sequence_cuts_the_text(
    sync_client: openai.OpenAI, stop: str
) -> None:
    choice = sync_client.chat.completions.create(
        model=LOCAL,
        messages=[{"role": "user", "content": "Describe the sea in two sentences."}],
        logprobs=True,
        max_tokens=30,
        seed=8,
        stop=[stop],
    ).choices[0]
    assert choice.logprobs is not None
    assert "".join(t.token for t in choice.logprobs.content or []) == choice.message.content
    assert stop not in (choice.message.content or "")


@pytest.mark.slow
def test_embedded_logprobs_join_across_characters_split_between_tokens(sync_client: openai.OpenAI) -> None:
    choice = sync_client.chat.completions.create(
        model=LOCAL,
        messages=[{"role": "user", "content": "Répète exactement : « 你好，世界 » et « crème brûlée »."}],
        logprobs=True,
        max_tokens=30,
        seed=3,
        temperature=0,
    ).choices[0]
    content = choice.message.content or ""
    tokens = choice.logprobs.content or [] if choice.logprobs else []
    assert any(ord(ch) > 127 for ch in content), content
    assert "".join(t.token for t in tokens) == content
    # Each token's own bytes, put together, are the text's UTF-8 bytes.
    assert b"".join(bytes(t.bytes or []) for t in tokens).decode() == content


STATUS_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "order_status",
        "description": "Look up the status of an order by its number.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}


def _after_a_result(arguments: str = '{"order_id": "A-1042"}') -> list[dict[str, Any]]:
    call = {"id": "call_1", "type": "function", "function": {"name": "order_status", "arguments": arguments}}
    return [
        {"role": "user", "content": "Where is my order A-1042?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped", "eta": "Friday"}'},
    ]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_after_a_tool_result_the_embedded_model_answers_instead_of_repeating_the_call(
    sync_client: openai.OpenAI, seed: int
) -> None:
    """An agent loop on the offline default ends: the turn after a tool's result is text, or a
    call that differs from the one answered (never the same call again, never a cut call)."""
    raw = sync_client.chat.completions.with_raw_response.create(
        model=LOCAL,
        messages=_after_a_result(),
        tools=[STATUS_TOOL],
        tool_choice="auto",
        max_tokens=40,
        seed=seed,
    )
    choice = check_completion(raw.http_response.json()).choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert json.loads(call.function.arguments) != {"order_id": "A-1042"}
    else:
        assert choice.message.content
        assert not choice.message.content.lstrip().startswith("{")


@pytest.mark.slow
async def test_a_streamed_turn_after_a_tool_result_never_sends_the_repeated_call(
    async_client: openai.AsyncOpenAI,
) -> None:
    stream = await async_client.chat.completions.create(
        model=LOCAL,
        messages=_after_a_result(),
        tools=[STATUS_TOOL],
        tool_choice="auto",
        max_tokens=40,
        seed=3,
        stream=True,
    )
    text, calls = "", []
    async for chunk in stream:
        check_chunk(chunk)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls += choice.delta.tool_calls or []
    if calls:
        assert "A-1042" not in "".join(c.function.arguments or "" for c in calls if c.function)
    else:
        assert text.strip()
