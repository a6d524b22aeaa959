"""A fake OpenAI-compatible upstream, cheap enough never to be the bottleneck.

A raw asyncio protocol on uvloop with httptools' parser: every answer is pre-rendered bytes, so
one request costs a few microseconds. `POST .../chat/completions` answers a `chat.completion`, or
with `"stream": true` an SSE stream of `--chunks` deltas (plus the usage chunk and `[DONE]`),
optionally waiting `--delay-ms` before the answer and `--chunk-delay-ms` between chunks.

    python -m bench.upstream --port 9100 --chunks 64
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httptools
import orjson
import uvloop

MODEL = "gpt-4o-mini"


def completion_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hello from the fake upstream!",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
            "system_fingerprint": None,
        }
    )


def stream_frames(chunks: int) -> list[bytes]:
    """The SSE frames of a stream: role, `chunks` text deltas, finish, usage, [DONE]."""
    created = int(time.time())

    def chunk(choices: list[object], **more: object) -> bytes:
        payload = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "system_fingerprint": None,
            "choices": choices,
            **more,
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    frames = []
    for i in range(chunks):
        delta: dict[str, object] = {"content": f"tok{i} "}
        if i == 0:
            delta["role"] = "assistant"
        frames.append(chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]))
    frames.append(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    frames.append(
        chunk([], usage={"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks})
    )
    frames.append(b"data: [DONE]\n\n")
    return frames


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream:
    """Pre-rendered answers shared by every connection."""

    def __init__(self, chunks: int, delay_ms: float, chunk_delay_ms: float) -> None:
        body = completion_body()
        self.json_response = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self.frames = [chunked(f) for f in stream_frames(chunks)]
        self.stream_whole = self.stream_head + b"".join(self.frames) + b"0\r\n\r\n"
        self.delay = delay_ms / 1000
        self.chunk_delay = chunk_delay_ms / 1000
        not_found = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
        self.not_found = (
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (
                len(not_found),
                not_found,
            )
        )
        models = orjson.dumps(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
        )
        self.models = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
            len(models),
            models,
        )


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests on it are answered in order."""

    def __init__(self, upstream: Upstream) -> None:
        self.u = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.busy: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        assert self.transport is not None
        if not url.endswith(b"/chat/completions"):
            self.transport.write(self.u.models if url.endswith(b"/models") else self.u.not_found)
            return
        streaming = b'"stream":true' in body or b'"stream": true' in body
        if not streaming and not self.u.delay:
            self.transport.write(self.u.json_response)
        elif streaming and not self.u.delay and not self.u.chunk_delay:
            self.transport.write(self.u.stream_whole)
        else:
            # Slow answers are written by a task; keep-alive order is kept by chaining them.
            previous = self.busy
            self.busy = asyncio.ensure_future(self.answer_slowly(streaming, previous))

    async def answer_slowly(self, streaming: bool, previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            await previous
        transport = self.transport
        assert transport is not None
        if self.u.delay:
            await asyncio.sleep(self.u.delay)
        if not streaming:
            transport.write(self.u.json_response)
            return
        transport.write(self.u.stream_head)
        for f in self.u.frames:
            if transport.is_closing():
                return
            transport.write(f)
            if self.u.chunk_delay:
                await asyncio.sleep(self.u.chunk_delay)
        transport.write(b"0\r\n\r\n")


async def serve(host: str, port: int, upstream: Upstream) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(upstream), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunks", type=int, default=64, help="text deltas per stream")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before each answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="wait between stream chunks")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, Upstream(args.chunks, args.delay_ms, args.chunk_delay_ms)))


if __name__ == "__main__":
    main()
