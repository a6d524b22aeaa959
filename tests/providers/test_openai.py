"""The OpenAI provider at the HTTP level: a mocked OpenAI API behind the real `openai` client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from app.settings import LOCAL_EMBEDDING_MODEL
from tests import openai_mock as mock
from tests.sse import events

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]
SECRET = "sk-test-secret-key-0000"


def sent(route: respx.Route) -> dict[str, Any]:
    """The JSON body the service sent upstream on the route's last call."""
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


def assert_error(r: httpx.Response, status: int, type_: str, code: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert error["code"] == code
    assert SECRET not in r.text
    return error


# -- success -------------------------------------------------------------------------------------


async def test_chat_returns_the_upstream_text_usage_and_finish_reason(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(
        json=mock.completion(
            "Hi!", usage={"prompt_tokens": 9, "completion_tokens": 2}, finish_reason="length"
        )
    )
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert body["provider"] == "openai"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hi!", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


async def test_generate_sends_the_effective_sampling_upstream_and_reports_it(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(
        json=mock.completion("A poem.", usage={"prompt_tokens": 12, "completion_tokens": 3})
    )
    r = await openai_client.post(
        "/v1/generate",
        json={
            "prompt": "Write a poem.",
            "system": "You are terse.",
            "temperature": 0.3,
            "max_tokens": 50,
            "presence_penalty": 0.5,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "A poem."
    assert body["choices"] == [{"index": 0, "text": "A poem.", "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    sampling = body["sampling"]
    assert isinstance(sampling["seed"], int)
    upstream_body = sent(route)
    assert upstream_body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Write a poem."},
    ]
    assert upstream_body["model"] == "gpt-4o-mini"
    for name in ("temperature", "top_p", "max_tokens", "n", "seed", "presence_penalty", "frequency_penalty"):
        assert upstream_body[name] == sampling[name], name
    assert sampling["temperature"] == 0.3
    assert sampling["max_tokens"] == 50
    assert sampling["top_p"] == 1.0
    assert body["timings"]["total_ms"] >= 0


async def test_a_client_seed_is_sent_upstream_unchanged(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=mock.completion("x"))
    r = await openai_client.post(
        CHAT, json={"model": "gpt-4o-mini", "messages": HELLO, "seed": 1234, "user": "u-1"}
    )
    assert r.status_code == 200, r.text
    assert sent(route)["seed"] == 1234
    assert sent(route)["user"] == "u-1"
    assert r.json()["sampling"]["seed"] == 1234


async def test_missing_upstream_usage_is_counted_by_the_service(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(json=mock.completion("Hello there, friend."))
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_n_choices_come_back_in_order(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(
        json=mock.completion("one", "two", "three", usage={"prompt_tokens": 5, "completion_tokens": 3})
    )
    r = await openai_client.post("/v1/generate", json={"prompt": "Count.", "n": 3})
    assert r.status_code == 200, r.text
    assert sent(route)["n"] == 3
    body = r.json()
    assert [c["text"] for c in body["choices"]] == ["one", "two", "three"]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["text"] == "one"
    assert body["sampling"]["n"] == 3


async def test_stop_sequences_are_sent_upstream(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=mock.completion("1, 2"))
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO, "stop": "3"})
    assert r.status_code == 200, r.text
    assert sent(route)["stop"] == ["3"]
    assert r.json()["sampling"]["stop"] == ["3"]
    r = await openai_client.post(
        CHAT, json={"model": "gpt-4o-mini", "messages": HELLO, "stop": ["\n", "END"]}
    )
    assert sent(route)["stop"] == ["\n", "END"]
    assert r.json()["choices"][0]["finish_reason"] == "stop"


async def test_parameters_the_upstream_honours_are_passed_through(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=mock.completion('{"a": 1}'))
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    r = await openai_client.post(
        CHAT,
        json={
            "model": "gpt-4o-mini",
            "messages": HELLO,
            "response_format": response_format,
            "logit_bias": {"50": -100},
        },
    )
    assert r.status_code == 200, r.text
    assert sent(route)["response_format"] == response_format
    assert sent(route)["logit_bias"] == {"50": -100}


async def test_the_model_table_maps_public_names_to_upstream_models(upstream: respx.MockRouter) -> None:
    from app.main import create_app
    from tests.conftest import _client, openai_settings

    route = upstream.post("/chat/completions").respond(json=mock.completion("x"))
    settings = openai_settings(models={"fast": {"provider": "openai", "upstream_model": "gpt-4.1-nano"}})
    async for client in _client(create_app(settings)):
        r = await client.post(CHAT, json={"model": "fast", "messages": HELLO})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "fast"
        assert sent(route)["model"] == "gpt-4.1-nano"
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["fast", LOCAL_EMBEDDING_MODEL]


# -- streaming -----------------------------------------------------------------------------------


async def test_chat_stream_relays_the_upstream_deltas_and_usage(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").mock(
        return_value=mock.sse_response([*mock.text_chunks("Hel", "lo", "!"), mock.usage_chunk(7, 3)])
    )
    r = await openai_client.post(
        CHAT,
        json={
            "model": "gpt-4o-mini",
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert sent(route)["stream"] is True
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == "Hello!"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


async def test_generate_stream_ends_with_the_metadata_event(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=mock.sse_response([*mock.text_chunks("Once ", "upon"), mock.usage_chunk(11, 2)])
    )
    r = await openai_client.post("/v1/generate", json={"prompt": "Tell a story.", "stream": True, "seed": 5})
    assert r.status_code == 200, r.text
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    deltas, final = frames[:-2], frames[-2]
    assert [d["text"] for d in deltas] == ["Once ", "upon"]
    assert all(d["object"] == "generation.chunk" for d in deltas)
    assert final["object"] == "generation"
    assert final["text"] == "Once upon"
    assert final["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    assert final["sampling"]["seed"] == 5
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["timings"]["ttft_ms"] <= final["timings"]["total_ms"]


async def test_a_backend_that_reports_no_stream_usage_gets_it_counted(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=mock.sse_response(mock.text_chunks("Hello", " world", " again"))
    )
    r = await openai_client.post(
        CHAT,
        json={
            "model": "gpt-4o-mini",
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.status_code == 200, r.text
    usage = events(r.text)[-2]["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_stream_with_n_choices_keeps_them_apart(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=mock.sse_response(
            [
                mock.chunk("", index=0, role=True),
                mock.chunk("", index=1, role=True),
                mock.chunk("a", index=0),
                mock.chunk("b", index=1),
                mock.chunk("c", index=0, finish_reason="stop"),
                mock.chunk(index=1, finish_reason="length"),
                mock.usage_chunk(4, 3),
            ]
        )
    )
    r = await openai_client.post("/v1/generate", json={"prompt": "Go.", "n": 2, "stream": True})
    assert r.status_code == 200, r.text
    final = events(r.text)[-2]
    assert final["choices"] == [
        {"index": 0, "text": "ac", "finish_reason": "stop"},
        {"index": 1, "text": "b", "finish_reason": "length"},
    ]


# -- upstream errors -----------------------------------------------------------------------------


def upstream_error(status: int, message: str, **more: Any) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None, **more}
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_400_passes_its_message_on(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, stream: bool
) -> None:
    upstream.post("/chat/completions").respond(
        400, json=upstream_error(400, "Invalid 'messages[0].content': too odd.", param="messages")
    )
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO, "stream": stream})
    error = assert_error(r, 400, "invalid_request_error", "upstream_bad_request")
    assert "too odd" in error["message"]
    assert error["param"] == "messages"


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_auth_failure_is_a_502_that_never_echoes_the_key(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, status: int
) -> None:
    upstream.post("/chat/completions").respond(
        status,
        json={
            "error": {
                "message": f"Incorrect API key provided: {SECRET}. You can find your API key at ...",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    )
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO})
    assert_error(r, 502, "upstream_error", "upstream_auth_failed")
    assert "sk-" not in r.text


async def test_a_key_quoted_in_an_upstream_400_is_redacted(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(400, json=upstream_error(400, f"bad request for key {SECRET}"))
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO})
    error = assert_error(r, 400, "invalid_request_error", "upstream_bad_request")
    assert "[redacted]" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_rate_limit_is_a_429_with_its_retry_after(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, stream: bool
) -> None:
    upstream.post("/chat/completions").respond(
        429,
        headers={"retry-after": "17"},
        json={"error": {"message": "Slow down.", "type": "requests", "param": None, "code": "rate_limit"}},
    )
    r = await openai_client.post("/v1/generate", json={"prompt": "Hi", "stream": stream})
    error = assert_error(r, 429, "rate_limit_error", "upstream_rate_limited")
    assert "Slow down." in error["message"]
    assert r.headers["retry-after"] == "17"


async def test_upstream_429_without_retry_after_still_tells_when_to_retry(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(429, json=upstream_error(429, "Slow down."))
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO})
    assert_error(r, 429, "rate_limit_error", "upstream_rate_limited")
    assert int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_upstream_server_errors_are_502(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, status: int
) -> None:
    upstream.post("/chat/completions").respond(status, json={"error": {"message": "boom"}})
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO})
    error = assert_error(r, 502, "upstream_error", "upstream_error")
    assert str(status) in error["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_timeout_is_a_504(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, stream: bool
) -> None:
    upstream.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("timed out"))
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO, "stream": stream})
    assert_error(r, 504, "timeout_error", "upstream_timeout")


@pytest.mark.parametrize("stream", [False, True])
async def test_unreachable_upstream_is_a_502(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, stream: bool
) -> None:
    upstream.post("/chat/completions").mock(side_effect=httpx.ConnectError("connection refused"))
    r = await openai_client.post("/v1/generate", json={"prompt": "Hi", "stream": stream})
    assert_error(r, 502, "upstream_error", "upstream_unreachable")


@pytest.mark.parametrize(
    "content", [b"{not json", b"<html>Bad gateway</html>", b'{"choices": "nope"}', b"[]", b'{"id": 1}']
)
async def test_a_malformed_upstream_answer_is_a_502(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, content: bytes
) -> None:
    upstream.post("/chat/completions").respond(
        200, content=content, headers={"content-type": "application/json"}
    )
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO})
    assert_error(r, 502, "upstream_error", "upstream_bad_response")


async def test_a_stream_that_dies_halfway_ends_with_an_error_event_then_done(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=mock.broken_sse_response([mock.chunk("", role=True), mock.chunk("Half a sen")])
    )
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO, "stream": True})
    assert r.status_code == 200
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    error = frames[-2]["error"]
    assert error["type"] == "upstream_error"
    assert error["message"]
    assert "Half a sen" in "".join(
        ch["delta"].get("content") or "" for f in frames[:-2] for ch in f["choices"]
    )


async def test_a_generate_stream_that_dies_halfway_ends_with_an_error_event_then_done(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=mock.broken_sse_response([mock.chunk("Half")]))
    r = await openai_client.post("/v1/generate", json={"prompt": "Hi", "stream": True})
    frames = events(r.text)
    assert frames[0]["text"] == "Half"
    assert frames[-2]["error"]["type"] == "upstream_error"
    assert frames[-1] == "[DONE]"


async def test_a_stream_with_a_garbled_event_ends_with_an_error_event(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    body = mock.sse([mock.chunk("ok")], done=False) + b"data: {garbage\n\n"
    upstream.post("/chat/completions").respond(
        200, content=body, headers={"content-type": "text/event-stream"}
    )
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO, "stream": True})
    frames = events(r.text)
    assert frames[-2]["error"]["type"] == "upstream_error"
    assert frames[-1] == "[DONE]"


async def test_an_error_event_from_the_upstream_mid_stream_is_relayed(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    body = mock.sse([mock.chunk("ok"), {"error": {"message": "overloaded", "type": "server_error"}}])
    upstream.post("/chat/completions").respond(
        200, content=body, headers={"content-type": "text/event-stream"}
    )
    r = await openai_client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HELLO, "stream": True})
    frames = events(r.text)
    assert "error" in frames[-2]
    assert frames[-2]["error"]["type"] == "upstream_error"
    assert frames[-1] == "[DONE]"


async def test_readiness_with_an_upstream_configured(openai_client: httpx.AsyncClient) -> None:
    r = await openai_client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["providers"] == {"openai": True}
