"""Payloads of a fake OpenAI-compatible upstream, as its HTTP API sends them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx


def completion(
    *texts: str,
    finish_reason: str = "stop",
    usage: dict[str, int] | None = None,
    model: str = "gpt-4o-mini",
) -> dict[str, Any]:
    """A `chat.completion` body with one choice per text."""
    body: dict[str, Any] = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            for i, text in enumerate(texts or ("Hello there!",))
        ],
    }
    if usage is not None:
        body["usage"] = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
    return body


def chunk(
    text: str | None = None,
    *,
    index: int = 0,
    finish_reason: str | None = None,
    role: bool = False,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if text is not None:
        delta["content"] = text
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
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


def text_chunks(*pieces: str, finish_reason: str = "stop") -> list[dict[str, Any]]:
    """A well-formed stream of one choice: a role chunk, the pieces, a finish chunk."""
    return [
        chunk("", role=True),
        *(chunk(piece) for piece in pieces),
        chunk(finish_reason=finish_reason),
    ]


def sse(events: Iterable[dict[str, Any]], *, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def sse_response(events: Iterable[dict[str, Any]], *, done: bool = True) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse(events, done=done))


class BrokenStream(httpx.AsyncByteStream):
    """Sends some SSE frames, then the connection drops."""

    def __init__(self, events: Iterable[dict[str, Any]]) -> None:
        self._frames = [sse([e], done=False) for e in events]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for f in self._frames:
            yield f
        raise httpx.ReadError("connection reset by peer")

    async def aclose(self) -> None:
        return None


def broken_sse_response(events: Iterable[dict[str, Any]]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=BrokenStream(events))
