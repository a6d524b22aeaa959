"""A stream never parks its producer: a client that stops reading is dropped after the write
timeout (the upstream stream is closed and the generation ends), and an upstream that goes
quiet ends the stream with an error event after the idle timeout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import respx

from app.main import create_app
from tests.access_helpers import slow_stream_response
from tests.conftest import openai_settings
from tests.preset_helpers import serve

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class _Quiet(httpx.AsyncByteStream):
    """An upstream that sends one chunk, then nothing, ever."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
        }
        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed.set()


async def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(
    upstream: respx.MockRouter,
) -> None:
    upstream.post("/chat/completions").mock(return_value=slow_stream_response(count=100_000, delay=0))
    app = create_app(openai_settings(stream_write_timeout=0.3))
    generations = []
    async with app.router.lifespan_context(app):
        metrics = app.state.genserve.metrics
        payload = json.dumps(BODY).encode()
        delivered = 0
        stuck = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not stuck.is_set():
                stuck.set()
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.Event().wait()  # never disconnects: it just stops reading
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            nonlocal delivered
            if message["type"] == "http.response.body":
                delivered += 1
                if delivered > 2:
                    await asyncio.Event().wait()  # the socket's buffer is full: a write never ends

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": CHAT,
            "raw_path": CHAT.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"host", b"genserve.test")],
            "client": ("127.0.0.1", 1234),
            "server": ("genserve.test", 80),
        }
        async with asyncio.timeout(10):  # before: the producer waited forever
            await app(scope, receive, send)
        lines = metrics.render().decode().splitlines()
        generations = [line for line in lines if line.startswith("genserve_generations_total")]
    assert any('outcome="aborted"' in line for line in generations), generations


async def test_an_idle_upstream_ends_the_stream_with_an_error_event(upstream: respx.MockRouter) -> None:
    quiet = _Quiet()
    upstream.post("/chat/completions").mock(
        return_value=httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=quiet)
    )
    async with serve(create_app(openai_settings(stream_idle_timeout=0.3, openai_timeout=30))) as client:
        async with asyncio.timeout(10):
            r = await client.post(CHAT, json=BODY)
    assert r.status_code == 200
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "stream_idle_timeout"
    assert set(error) == {"message", "type", "param", "code"}
    assert quiet.closed.is_set()
