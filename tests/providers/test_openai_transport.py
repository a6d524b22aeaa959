"""The OpenAI provider over its production transport (the SDK's aiohttp client) against a
fake OpenAI-compatible server on a real socket: respx cannot see aiohttp, so these go over HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.main import create_app
from tests import openai_mock as mock
from tests.conftest import LiveServer, _client, openai_settings, serve_in_thread
from tests.sse import events

HELLO = [{"role": "user", "content": "Hello"}]


async def _chat(request: Request) -> Response:
    mode: str = request.app.state.mode
    body = await request.json()
    request.app.state.seen.append(body)
    if mode == "slow":
        await asyncio.sleep(3)
    if mode == "rate_limited":
        return JSONResponse(
            {"error": {"message": "Slow down."}}, status_code=429, headers={"retry-after": "7"}
        )
    if mode == "unauthorized":
        return JSONResponse(
            {"error": {"message": "Incorrect API key provided: sk-test-secret-key-0000"}}, 401
        )
    if not body.get("stream"):
        return JSONResponse(
            mock.completion("Hi over aiohttp", usage={"prompt_tokens": 4, "completion_tokens": 3})
        )

    async def chunks() -> AsyncIterator[bytes]:
        yield mock.sse([mock.chunk("", role=True), mock.chunk("Hal")], done=False)
        if mode == "broken":
            raise ConnectionAbortedError("the upstream died")  # uvicorn drops the connection
        yield mock.sse([mock.chunk("f"), mock.chunk(finish_reason="stop"), mock.usage_chunk(4, 2)])

    return StreamingResponse(chunks(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[LiveServer]:
    app = Starlette(routes=[Route("/v1/chat/completions", _chat, methods=["POST"])])
    app.state.mode = "ok"
    app.state.seen = []
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
async def client(fake_openai: LiveServer, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    fake_openai.app.state.mode = getattr(request, "param", "ok")
    settings = openai_settings(
        openai_base_url=f"{fake_openai.url}/v1", openai_http_transport="aiohttp", openai_timeout=1.0
    )
    async for c in _client(create_app(settings)):
        yield c


def chat(**more: Any) -> dict[str, Any]:
    return {"json": {"model": "gpt-4o-mini", "messages": HELLO, **more}}


async def test_chat_over_aiohttp(client: httpx.AsyncClient, fake_openai: LiveServer) -> None:
    r = await client.post("/v1/chat/completions", **chat(seed=8))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hi over aiohttp"
    assert r.json()["usage"]["total_tokens"] == 7
    assert fake_openai.app.state.seen[-1]["seed"] == 8


async def test_stream_over_aiohttp(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", **chat(stream=True, stream_options={"include_usage": True}))
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    assert "".join(ch["delta"].get("content") or "" for f in frames[:-1] for ch in f["choices"]) == "Half"
    assert frames[-2]["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("client", ["broken"], indirect=True)
async def test_a_stream_cut_over_aiohttp_ends_with_an_error_event(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", **chat(stream=True))
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    assert frames[-2]["error"]["type"] == "upstream_error"


@pytest.mark.parametrize("client", ["rate_limited"], indirect=True)
async def test_rate_limit_over_aiohttp(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/generate", json={"prompt": "Hi"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"


@pytest.mark.parametrize("client", ["unauthorized"], indirect=True)
async def test_bad_key_over_aiohttp(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", **chat())
    assert r.status_code == 502
    assert "sk-" not in r.text


@pytest.mark.parametrize("client", ["slow"], indirect=True)
@pytest.mark.parametrize("stream", [False, True])
async def test_timeout_over_aiohttp_is_504(client: httpx.AsyncClient, stream: bool) -> None:
    started = time.monotonic()
    r = await client.post("/v1/chat/completions", **chat(stream=stream))
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refused_connection_over_aiohttp_is_502_not_a_timeout(stream: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = openai_settings(openai_base_url=f"http://127.0.0.1:{port}/v1", openai_http_transport="aiohttp")
    async for c in _client(create_app(settings)):
        r = await c.post("/v1/generate", json={"prompt": "Hi", "stream": stream})
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "upstream_unreachable"
