"""The Responses API through the official SDK: create (plain, streamed, with the SDK's stream
helper), retrieve, delete, input items; conversations over `previous_response_id` that survive a
restart and continue on another replica; function tools; every body checked against OpenAI's
published schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest
import respx
from openai.types.responses import Response

from app.main import create_app
from app.settings import LOCAL_DEFAULT_MODEL
from tests import openai_mock as mock
from tests.access_helpers import bearer, create_key, keys_app
from tests.conftest import (
    UPSTREAM,
    LiveServer,
    make_settings,
    mixed_settings,
    openai_settings,
    serve_in_thread,
    serving,
)
from tests.openai_schemas import error_conforms, request_conforms, response_conforms, response_event_conforms
from tests.sse import events

LOCAL = LOCAL_DEFAULT_MODEL
REMOTE = "gpt-4o-mini"
ORDER_TOOL: dict[str, Any] = {
    "type": "function",
    "strict": True,
    "name": "get_order",
    "description": "Look up an order by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
}
DOCUMENTED_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with serve_in_thread(create_app(mixed_settings())) as live:
        yield live


def checked(raw: Any) -> Response:
    response_conforms(raw.http_response.json())
    parsed = raw.parse()
    assert isinstance(parsed, Response)
    return parsed


def sent_messages(route: respx.Route, call: int = -1) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = json.loads(route.calls[call].request.content)["messages"]
    return messages


def tool_call_completion(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    body = mock.completion(
        "", finish_reason="tool_calls", usage={"prompt_tokens": 30, "completion_tokens": 9}
    )
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }
    return body


# -- the embedded model --------------------------------------------------------------------------


def test_create_answers_with_output_text_on_the_embedded_model(client: openai.OpenAI) -> None:
    response = checked(
        client.responses.with_raw_response.create(
            model=LOCAL, input="What is the capital of France?", max_output_tokens=24, temperature=0
        )
    )
    assert response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.model == LOCAL
    assert response.output_text.strip()
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.store is True
    assert response.temperature == 0


async def test_async_items_instructions_and_metadata(async_client: openai.AsyncOpenAI) -> None:
    raw = await async_client.responses.with_raw_response.create(
        model=LOCAL,
        instructions="Answer in one short sentence.",
        input=[
            {"role": "developer", "content": "Be friendly."},
            {"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]},
        ],
        max_output_tokens=16,
        metadata={"ticket": "T-1"},
        temperature=0,
    )
    response_conforms(json.loads(raw.http_response.content))
    response = raw.parse()
    assert response.instructions == "Answer in one short sentence."
    assert response.metadata == {"ticket": "T-1"}
    assert response.output_text
    items = await async_client.responses.input_items.list(response.id, order="asc")
    assert [(item.type, item.role) for item in items.data] == [("message", "developer"), ("message", "user")]  # type: ignore[union-attr]


def test_the_stream_helper_sees_the_documented_events(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=LOCAL, input="Name a colour.", max_output_tokens=300, temperature=0
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    deltas = [k for k in kinds if k == "response.output_text.delta"]
    assert deltas
    # The documented order, with as many deltas as there were pieces of text.
    collapsed = [k for i, k in enumerate(kinds) if k != "response.output_text.delta" or kinds[i - 1] != k]
    assert collapsed == DOCUMENTED_ORDER
    assert final.status == "completed"
    assert final.output_text.strip()
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text


def test_raw_stream_events_conform_and_are_numbered(server: LiveServer) -> None:
    body = {"model": LOCAL, "input": "Say hi.", "max_output_tokens": 200, "stream": True, "temperature": 0}
    r = httpx.post(f"{server.url}/v1/responses", json=body, timeout=60)
    assert r.status_code == 200
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    payloads = frames[:-1]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    for payload in payloads:
        response_event_conforms(payload)
    assert "event: response.created\n" in r.text
    text = "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta")
    [done] = [p for p in payloads if p["type"] == "response.output_text.done"]
    assert done["text"] == text
    assert payloads[-1]["type"] == "response.completed"
    assert payloads[-1]["response"]["output"][0]["content"][0]["text"] == text


def test_retrieve_delete_and_input_items(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=LOCAL,
        input=[
            {"role": "user", "content": "One."},
            {"role": "assistant", "content": "Two."},
            {"role": "user", "content": "Three?"},
        ],
        max_output_tokens=8,
    )
    again = client.responses.with_raw_response.retrieve(response.id)
    response_conforms(again.http_response.json())
    assert again.parse().output_text == response.output_text
    newest_first = client.responses.input_items.list(response.id)
    assert [item.content[0].text for item in newest_first.data] == ["Three?", "Two.", "One."]  # type: ignore[union-attr]
    page = client.responses.input_items.list(response.id, order="asc", limit=1)
    assert page.has_more
    rest = client.responses.input_items.list(response.id, order="asc", after=page.data[0].id)
    assert [item.content[0].text for item in rest.data] == ["Two.", "Three?"]  # type: ignore[union-attr]
    assert not rest.has_more
    deleted = client.responses.delete(response.id)
    assert deleted is None
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(response.id)
    error_conforms(caught.value.response.json())
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    response = client.responses.create(model=LOCAL, input="Hi", max_output_tokens=4, store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=LOCAL, input="Again", previous_response_id=response.id)
    assert caught.value.param == "previous_response_id"


def test_a_named_tool_call_has_arguments_that_validate(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=LOCAL,
        input="Where is my order 42?",
        tools=[ORDER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_order"},
        max_output_tokens=200,
        temperature=0,
    )
    [call] = response.output
    assert call.type == "function_call"
    assert call.name == "get_order"
    jsonschema.validate(json.loads(call.arguments), ORDER_TOOL["parameters"])
    # The call's output, sent back, is answered with text.
    answer = client.responses.create(
        model=LOCAL,
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"status": "shipped"}'}],
        max_output_tokens=24,
        temperature=0,
    )
    assert answer.output_text
    assert answer.previous_response_id == response.id


class Order(pydantic.BaseModel):
    order_id: str
    shipped: bool


def test_the_sdk_parse_helper_gets_structured_output_from_the_embedded_model(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.parse(
        model=LOCAL,
        input="Order 42 has shipped. Give its number and whether it shipped.",
        text_format=Order,
        max_output_tokens=60,
        temperature=0,
    )
    body = raw.http_response.json()
    response_conforms(body)
    assert body["text"]["format"]["type"] == "json_schema"
    assert body["text"]["format"]["name"] == "Order"
    assert body["text"]["format"]["strict"] is True
    parsed = raw.parse()
    assert isinstance(parsed.output_parsed, Order)
    # Stored, it keeps the format it was asked for.
    assert client.responses.retrieve(parsed.id).text.format.type == "json_schema"


def test_a_json_object_format_gives_a_json_object(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=LOCAL,
        input="Give a JSON object with a cat's name and age.",
        text={"format": {"type": "json_object"}},
        max_output_tokens=60,
        temperature=0,
    )
    assert response.status == "completed"
    assert isinstance(json.loads(response.output_text), dict)
    assert response.text.format.type == "json_object"


def test_a_text_format_goes_upstream_as_response_format(
    client: openai.OpenAI, remote: respx.MockRouter
) -> None:
    route = remote.post(f"{UPSTREAM}/chat/completions").respond(
        json=mock.completion('{"order_id": "42", "shipped": true}')
    )
    parsed = client.responses.parse(model=REMOTE, input="Order 42?", text_format=Order)
    assert parsed.output_parsed == Order(order_id="42", shipped=True)
    sent = json.loads(route.calls.last.request.content)["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Order"
    assert sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"]["required"] == ["order_id", "shipped"]
    client.responses.create(model=REMOTE, input="Hi", text={"format": {"type": "text"}})
    assert "response_format" not in json.loads(route.calls.last.request.content)


@pytest.mark.parametrize(
    ("text", "param"),
    [
        ({"format": {"type": "xml"}}, "text.format"),
        ({"format": {"type": "json_schema", "schema": {}}}, "text.format.name"),
        ({"format": {"type": "text"}, "tone": "warm"}, "text.tone"),
    ],
)
def test_a_bad_text_format_is_400_naming_it(client: openai.OpenAI, text: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=LOCAL, input="Hi", text=text)  # type: ignore[arg-type]
    error_conforms(caught.value.response.json())
    assert caught.value.param == param


def test_built_in_tools_are_refused_by_name(client: openai.OpenAI) -> None:
    # file_search is served (tests/api/test_file_search.py); a store of nobody's is a 404.
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model=LOCAL, input="Hi", tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}]
        )
    for tool in ({"type": "web_search"}, {"type": "code_interpreter"}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=LOCAL, input="Hi", tools=[tool])  # type: ignore[list-item]
        assert caught.value.param == "tools"
        assert tool["type"] in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=LOCAL, input="Hi", tool_choice={"type": "function", "name": "nope"}, tools=[ORDER_TOOL]
        )  # type: ignore[list-item]
    assert caught.value.param == "tool_choice"


def test_an_empty_include_is_accepted_as_the_agents_sdk_sends_it(
    client: openai.OpenAI, remote: respx.MockRouter
) -> None:
    remote.post(f"{UPSTREAM}/chat/completions").respond(json=mock.completion("Hello."))
    for include in ([], ["file_search_call.results"]):
        response = checked(
            client.responses.with_raw_response.create(model=REMOTE, input="Hi", include=include)
        )
        assert response.output_text == "Hello."


@pytest.mark.parametrize(
    ("include", "param", "named"),
    [
        (["web_search_call.results"], "include[0]", "web_search_call.results"),
        (["file_search_call.results", "message.output_text.logprobs"], "include[1]", "logprobs"),
        (["everything"], "include[0]", "everything"),
    ],
)
def test_an_include_value_genserve_cannot_produce_is_400_naming_the_value(
    client: openai.OpenAI, include: list[str], param: str, named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=REMOTE, input="Hi", include=include)  # type: ignore[list-item]
    error_conforms(caught.value.response.json())
    assert caught.value.param == param
    assert named in caught.value.message


def test_the_requests_here_are_openais_own_shapes() -> None:
    for body in (
        {"model": LOCAL, "input": "Hi", "max_output_tokens": 24, "temperature": 0, "store": False},
        {
            "model": LOCAL,
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Be friendly."},
                # (A list of `input_text` parts is valid too, but the extracted schema dropped the
                # discriminator that tells its two message shapes apart: `oneOf` finds both.)
                {"role": "user", "content": "Say hello."},
                {"type": "function_call", "call_id": "c1", "name": "get_order", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "{}"},
            ],
            "tools": [ORDER_TOOL],
            "tool_choice": {"type": "function", "name": "get_order"},
            "metadata": {"ticket": "T-1"},
            "previous_response_id": "resp-1",
            "stream": True,
        },
    ):
        request_conforms("openai_responses_schemas.json", "CreateResponse", body)


# -- an upstream ---------------------------------------------------------------------------------


def test_previous_response_id_sends_the_history_upstream(
    client: openai.OpenAI, remote: respx.MockRouter
) -> None:
    route = remote.post(f"{UPSTREAM}/chat/completions")
    route.side_effect = [
        httpx.Response(
            200,
            json=mock.completion(
                "Nice to meet you, Ada.", usage={"prompt_tokens": 9, "completion_tokens": 6}
            ),
        ),
        httpx.Response(
            200,
            json=mock.completion("Your name is Ada.", usage={"prompt_tokens": 20, "completion_tokens": 5}),
        ),
    ]
    first = client.responses.create(model=REMOTE, input="My name is Ada.", instructions="Be brief.")
    second = checked(
        client.responses.with_raw_response.create(
            model=REMOTE, input="What is my name?", previous_response_id=first.id, instructions="Be kind."
        )
    )
    assert second.output_text == "Your name is Ada."
    assert second.previous_response_id == first.id
    # Instructions are not carried over; the earlier exchange is.
    assert sent_messages(route) == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]


async def test_async_function_calls_round_trip_through_an_upstream(
    async_client: openai.AsyncOpenAI, remote: respx.MockRouter
) -> None:
    route = remote.post(f"{UPSTREAM}/chat/completions")
    route.side_effect = [
        httpx.Response(200, json=tool_call_completion("call_abc", "get_order", '{"order_id":"42"}')),
        httpx.Response(200, json=mock.completion("Order 42 has shipped.")),
    ]
    raw = await async_client.responses.with_raw_response.create(
        model=REMOTE,
        input="Where is order 42?",
        tools=[ORDER_TOOL],
        tool_choice="required",  # type: ignore[list-item]
    )
    response_conforms(json.loads(raw.http_response.content))
    response = raw.parse()
    [call] = response.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_abc", "get_order", '{"order_id":"42"}')
    sent = json.loads(route.calls[0].request.content)
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["name"] == "get_order"
    answer = await async_client.responses.create(
        model=REMOTE,
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": "call_abc", "output": '{"status":"shipped"}'}],
        tools=[ORDER_TOOL],  # type: ignore[list-item]
    )
    assert answer.output_text == "Order 42 has shipped."
    messages = sent_messages(route)
    assert messages[-2]["role"] == "assistant"
    assert messages[-2]["tool_calls"][0]["id"] == "call_abc"
    assert messages[-1] == {"role": "tool", "content": '{"status":"shipped"}', "tool_call_id": "call_abc"}


def test_the_stream_helper_assembles_a_streamed_call(client: openai.OpenAI, remote: respx.MockRouter) -> None:
    first = mock.chunk(None, role=True)
    first["choices"][0]["delta"]["tool_calls"] = [
        {"index": 0, "id": "call_s", "type": "function", "function": {"name": "get_order", "arguments": ""}}
    ]
    pieces = []
    for piece in ('{"order_', 'id":"7"}'):
        c = mock.chunk(None)
        c["choices"][0]["delta"]["tool_calls"] = [{"index": 0, "function": {"arguments": piece}}]
        pieces.append(c)
    remote.post(f"{UPSTREAM}/chat/completions").respond(
        headers={"content-type": "text/event-stream"},
        content=mock.sse([first, *pieces, mock.chunk(finish_reason="tool_calls"), mock.usage_chunk(20, 8)]),
    )
    with client.responses.stream(model=REMOTE, input="Order 7?", tools=[ORDER_TOOL]) as stream:  # type: ignore[list-item]
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.count("response.function_call_arguments.delta") == 2
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    [call] = final.output
    assert call.type == "function_call"
    assert call.arguments == '{"order_id":"7"}'


# -- ownership, restarts and replicas --------------------------------------------------------------


async def test_another_key_sees_no_such_response() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        upstream.post("/chat/completions").respond(json=mock.completion("Hello"))
        async with serving(keys_app()) as http:
            _, alice = await create_key(http, name="alice")
            _, bob = await create_key(http, name="bob")
            r = await http.post("/v1/responses", json={"model": REMOTE, "input": "Hi"}, headers=bearer(alice))
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            for method, path in (
                ("GET", f"/v1/responses/{rid}"),
                ("GET", f"/v1/responses/{rid}/input_items"),
                ("DELETE", f"/v1/responses/{rid}"),
            ):
                theirs = await http.request(method, path, headers=bearer(bob))
                assert theirs.status_code == 404
                error_conforms(theirs.json())
            r = await http.post(
                "/v1/responses",
                json={"model": REMOTE, "input": "Again", "previous_response_id": rid},
                headers=bearer(bob),
            )
            assert r.status_code == 404
            assert r.json()["error"]["param"] == "previous_response_id"
            assert (await http.get(f"/v1/responses/{rid}", headers=bearer(alice))).status_code == 200


async def test_a_conversation_survives_a_restart_on_sqlite(tmp_path: Any) -> None:
    """The embedded model: a response stored by one app is continued by a new app on the file."""
    settings = {
        "provider": "local",
        "local_n_threads": 1,
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/g.db",
    }
    async with serving(create_app(make_settings(**settings))) as http:
        r = await http.post(
            "/v1/responses", json={"model": LOCAL, "input": "My name is Ada.", "max_output_tokens": 12}
        )
        assert r.status_code == 200, r.text
        first = r.json()
    async with serving(create_app(make_settings(**settings))) as http:
        again = await http.get(f"/v1/responses/{first['id']}")
        assert again.json()["output"] == first["output"]
        r = await http.post(
            "/v1/responses",
            json={
                "model": LOCAL,
                "input": "What is my name?",
                "previous_response_id": first["id"],
                "max_output_tokens": 12,
            },
        )
        assert r.status_code == 200, r.text
        second = r.json()
        response_conforms(second)
    assert second["previous_response_id"] == first["id"]
    assert second["service_metadata"]["turns_in_context"] == 2  # the first question and its answer
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_conversation_continues_on_another_replica(database_url: str) -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/chat/completions")
        route.side_effect = [
            httpx.Response(200, json=mock.completion("Noted: blue.")),
            httpx.Response(200, json=mock.completion("Blue.")),
            httpx.Response(200, json=mock.completion("You said blue, then asked twice.")),
        ]
        one = create_app(openai_settings(database_url=database_url))
        two = create_app(openai_settings(database_url=database_url))
        async with serving(one) as a, serving(two) as b:
            first = (
                await a.post("/v1/responses", json={"model": REMOTE, "input": "My colour is blue."})
            ).json()
            second = (
                await b.post(
                    "/v1/responses",
                    json={"model": REMOTE, "input": "Which colour?", "previous_response_id": first["id"]},
                )
            ).json()
            third = await a.post(
                "/v1/responses",
                json={"model": REMOTE, "input": "Again?", "previous_response_id": second["id"]},
            )
            assert third.status_code == 200, third.text
            seen = await b.get(f"/v1/responses/{third.json()['id']}")
            assert seen.json()["output"] == third.json()["output"]
    assert [m["content"] for m in sent_messages(route)] == [
        "My colour is blue.",
        "Noted: blue.",
        "Which colour?",
        "Blue.",
        "Again?",
    ]


async def test_a_long_chain_is_fitted_into_the_context_window() -> None:
    """Old exchanges are left out, newest kept, as conversations do."""
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/chat/completions").respond(json=mock.completion("word " * 60))
        app = create_app(openai_settings(models={REMOTE: {"provider": "openai", "context_window": 512}}))
        async with serving(app) as http:
            previous = None
            for turn in range(8):
                body: dict[str, Any] = {
                    "model": REMOTE,
                    "input": f"Turn {turn}: " + "word " * 60,
                    "max_output_tokens": 64,
                }
                if previous:
                    body["previous_response_id"] = previous
                r = await http.post("/v1/responses", json=body)
                assert r.status_code == 200, r.text
                previous = r.json()["id"]
            kept = r.json()["service_metadata"]["turns_in_context"]
    messages = sent_messages(route)
    assert 0 < kept < 14
    assert len(messages) == kept + 1
    assert messages[0]["role"] == "user"
    assert messages[-1]["content"].startswith("Turn 7:")


async def test_truncation_disabled_sends_the_whole_chain_or_refuses() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/chat/completions").respond(json=mock.completion("word " * 60))
        app = create_app(openai_settings(models={REMOTE: {"provider": "openai", "context_window": 512}}))
        async with serving(app) as http:
            body: dict[str, Any] = {
                "model": REMOTE,
                "input": "Turn 0: " + "word " * 120,
                "max_output_tokens": 64,
            }
            first = await http.post("/v1/responses", json=body)
            assert first.json()["truncation"] == "auto"  # what is done when the client does not say
            previous = first.json()["id"]
            body |= {
                "input": "Turn 1: " + "word " * 120,
                "previous_response_id": previous,
                "truncation": "disabled",
            }
            whole = await http.post("/v1/responses", json=body)
            assert whole.status_code == 200, whole.text
            response_conforms(whole.json())
            assert whole.json()["truncation"] == "disabled"
            assert [m["content"][:7] for m in sent_messages(route)] == ["Turn 0:", "word wo", "Turn 1:"]
            previous = whole.json()["id"]
            body |= {"input": "Turn 2: " + "word " * 120, "previous_response_id": previous}
            refused = await http.post("/v1/responses", json=body)
            assert refused.status_code == 400, refused.text
            error_conforms(refused.json())
            assert refused.json()["error"]["code"] == "context_length_exceeded"
            assert "truncation" in refused.json()["error"]["message"]
            # The same turn with `auto` leaves the oldest exchange out instead.
            fitted = await http.post("/v1/responses", json={**body, "truncation": "auto"})
            assert fitted.status_code == 200, fitted.text
            assert sent_messages(route)[0]["content"].startswith("Turn 1:")
