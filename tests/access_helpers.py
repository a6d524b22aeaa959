"""Shared pieces of the keys, limits and usage tests: apps in keys mode, a fake upstream, ASGI
clients that walk away mid-answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from fastapi import FastAPI

from app.clock import Clocks
from app.main import create_app
from tests.conftest import REDIS, openai_settings, serving

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
PRICED_MODELS = {
    "gpt-4o-mini": {
        "provider": "openai",
        "context_window": 128000,
        "input_price_per_mtok": 0.15,
        "output_price_per_mtok": 0.60,
    },
    "gpt-4o": {
        "provider": "openai",
        "context_window": 128000,
        "input_price_per_mtok": 2.5,
        "output_price_per_mtok": 10.0,
    },
}


def keys_app(*, redis_prefix: str | None = None, clocks: Clocks | None = None, **overrides: Any) -> FastAPI:
    """An app in keys mode with a mocked upstream; Redis when a prefix is given."""
    values: dict[str, Any] = {"auth_mode": "keys", "admin_token": ADMIN_TOKEN, "models": PRICED_MODELS}
    if redis_prefix is not None:
        values.update(redis_url=REDIS, redis_prefix=redis_prefix)
    values.update(overrides)
    return create_app(openai_settings(**values), clocks=clocks)


def running(app: FastAPI) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return serving(app, timeout=30)


async def create_key(client: httpx.AsyncClient, **body: Any) -> tuple[str, str]:
    """(key id, secret)"""
    body.setdefault("name", "test")
    r = await client.post("/admin/keys", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def chat_body(text: str = "Hello", **more: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **more}


# --- the fake upstream ----------------------------------------------------------------------------


def completion(
    text: str = "Hi there!", prompt_tokens: int = 10, completion_tokens: int = 5
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _chunk(text: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    event: dict[str, Any] = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": {"content": text} if text is not None else {}, "finish_reason": finish}],
    }
    if usage is not None:
        event["usage"] = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def stream_response(pieces: Iterable[str], prompt_tokens: int, completion_tokens: int) -> httpx.Response:
    body = b"".join(_chunk(p) for p in pieces) + _chunk(finish="stop")
    body += _chunk(usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
    body += b"data: [DONE]\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


class _SlowStream(httpx.AsyncByteStream):
    """An upstream that keeps talking: one chunk every `delay` seconds, `count` of them."""

    def __init__(self, count: int, delay: float) -> None:
        self.count, self.delay = count, delay

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(self.count):
            yield _chunk(f"w{i} ")
            await asyncio.sleep(self.delay)
        yield _chunk(finish="stop")
        yield _chunk(usage={"prompt_tokens": 10, "completion_tokens": self.count})
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        return None


def slow_stream_response(count: int = 200, delay: float = 0.02) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_SlowStream(count, delay)
    )


# --- a client that walks away ---------------------------------------------------------------------


async def walk_away(
    app: FastAPI, path: str, body: dict[str, Any], headers: dict[str, str], *, after_chunks: int
) -> list[bytes]:
    """POST through raw ASGI, then disconnect once `after_chunks` body chunks arrived (0: once
    the request has been read, before any answer). Returns the body chunks received."""
    payload = json.dumps(body).encode()
    received: list[bytes] = []
    enough = asyncio.Event()
    sent_body = False
    if after_chunks == 0:
        asyncio.get_running_loop().call_later(0.3, enough.set)

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            if after_chunks and len(received) >= after_chunks:
                enough.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"genserve.test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *((k.encode(), v.encode()) for k, v in headers.items()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("genserve.test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return received
