"""What a fake OpenAI-compatible upstream answers, faults included, for the resilience tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx

from app.clock import Clocks
from app.main import create_app
from app.settings import Settings
from tests.conftest import serving


def completion(text: str = "Hello there!", model: str = "gpt-4o-mini", n: int = 1) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def ok(text: str = "Hello there!", model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.Response(200, json=completion(text, model))


def chunk(text: str | None = None, finish_reason: str | None = None, index: int = 0) -> dict[str, Any]:
    delta: dict[str, Any] = {} if text is None else {"content": text}
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(prompt_tokens: int = 5, completion_tokens: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def sse_bytes(events: Iterable[dict[str, Any]], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def streamed(*pieces: str) -> httpx.Response:
    """A well-formed stream of one choice: the pieces, a finish, the usage."""
    events = [*(chunk(p) for p in pieces), chunk(finish_reason="stop"), usage_chunk()]
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse_bytes(events))


class _DyingStream(httpx.AsyncByteStream):
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self._events:
            yield sse_bytes([event], done=False)
        raise httpx.ReadError("connection reset by peer")

    async def aclose(self) -> None:
        return None


class _SlowStream(httpx.AsyncByteStream):
    def __init__(self, events: list[dict[str, Any]], pause: float) -> None:
        self._events = events
        self._pause = pause

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self._events:
            yield sse_bytes([event], done=False)
            await asyncio.sleep(self._pause)
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        return None


def slow_stream(*pieces: str, pause: float) -> httpx.Response:
    """A well-formed stream that pauses after every event."""
    events = [*(chunk(p) for p in pieces), chunk(finish_reason="stop"), usage_chunk()]
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_SlowStream(events, pause)
    )


def dying_stream(*pieces: str) -> httpx.Response:
    """Sends the pieces, then the connection drops."""
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        stream=_DyingStream([chunk(p) for p in pieces]),
    )


def error(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        headers=headers,
        json={"error": {"message": f"upstream says {status}", "type": "server_error", "code": None}},
    )


def slow(seconds: float, response: Callable[[], httpx.Response] = ok) -> Callable[..., Any]:
    async def side_effect(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return response()

    return side_effect


def sse_events(body: str) -> list[Any]:
    """Every `data:` frame of an SSE body; `[DONE]` stays a string."""
    out: list[Any] = []
    for frame in body.split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


class Service:
    """An app built from settings, with an HTTP client into it, for one test."""

    def __init__(self, settings: Settings, *, clocks: Clocks | None = None) -> None:
        self.app = create_app(settings, clocks=clocks)
        self._serving = serving(self.app, timeout=30)

    async def __aenter__(self) -> httpx.AsyncClient:
        return await self._serving.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.__aexit__(None, None, None)

    @property
    def state(self) -> Any:
        return self.app.state.genserve
