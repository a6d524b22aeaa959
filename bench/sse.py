"""A closed-loop SSE load generator: `c` keep-alive connections, each streaming one request after
another for a fixed time, recording time to first byte and total time per stream.

Raw asyncio sockets on uvloop, so the client costs little next to what it measures.

    python -m bench.sse --url http://127.0.0.1:8000/v1/chat/completions --body '{...}' -c 16 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import urlsplit

import orjson
import uvloop


class StreamFailed(Exception):
    pass


async def _read_body(reader: asyncio.StreamReader, head: bytes, t0: float) -> tuple[float, int, bool]:
    """Read one response body; return (ttfb seconds, data frames, saw [DONE])."""
    ttfb = 0.0
    frames = 0
    tail = b""
    done = False
    if b"transfer-encoding: chunked" in head.lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = await reader.readexactly(size + 2)
            if not ttfb:
                ttfb = time.perf_counter() - t0
            scan = tail + data
            frames += data.count(b"data: ")
            if b"data: [DONE]" in scan:
                done = True
            tail = data[-16:]
    else:
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        data = await reader.readexactly(length)
        ttfb = time.perf_counter() - t0
        frames = data.count(b"data: ")
        done = b"data: [DONE]" in data
    return ttfb, frames, done


async def _connection(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    max_streams: int,
    out: list[tuple[float, float, int]],
) -> int:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    errors = 0
    try:
        n = 0
        while time.perf_counter() < deadline and n < max_streams:
            n += 1
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            ttfb, frames, done = await _read_body(reader, head, t0)
            total = time.perf_counter() - t0
            if head[9:12] != b"200" or not done:
                errors += 1
                continue
            out.append((ttfb, total, frames))
    finally:
        writer.close()
    return errors


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def run(
    url: str, body: bytes, concurrency: int, duration: float, max_streams: int
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    out: list[tuple[float, float, int]] = []
    started = time.perf_counter()
    deadline = started + duration
    errors = await asyncio.gather(
        *(_connection(host, port, request, deadline, max_streams, out) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    ttfb = [o[0] * 1000 for o in out]
    total = [o[1] * 1000 for o in out]
    return {
        "streams": len(out),
        "errors": sum(errors),
        "seconds": elapsed,
        "frames": round(sum(o[2] for o in out) / max(1, len(out)), 1),
        "ttfb_p50": _pct(ttfb, 50),
        "ttfb_p99": _pct(ttfb, 99),
        "total_p50": _pct(total, 50),
        "total_p99": _pct(total, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--max-streams", type=int, default=1_000_000, help="per connection")
    args = parser.parse_args()
    result = uvloop.run(run(args.url, args.body.encode(), args.concurrency, args.duration, args.max_streams))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
