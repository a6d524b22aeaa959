"""CPU per request of the service and of the floor, driven in-process through ASGI (no HTTP
server, no load generator): a steadier signal than `make bench` on a busy machine, for
measuring one change. The provider still reaches `bench/upstream.py` over loopback through
the `openai` SDK.

Each target runs `--batches` batches of `--requests` requests (`-c` at a time) in turn; the
least CPU per request over its batches is reported (interference from other work only ever
adds), and the service's ratio to the floor's.

    python -m bench.inproc [-c 16] [--batches 15] [--requests 300] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvloop

from bench import run

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def request(app: Asgi, path: str, body: bytes) -> int:
    """One request through the app; returns the bytes of the response body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    done = asyncio.Event()
    size = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal size
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    done.set()
    return size


async def batch(app: Asgi, path: str, body: bytes, requests: int, concurrency: int) -> float:
    """CPU seconds per request for `requests` requests, `concurrency` at a time."""
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await request(app, path, body)

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / (per_worker * concurrency)


async def measure(args: argparse.Namespace, upstream: str, data_dir: str) -> None:
    os.environ.update(run.service_env(upstream, 8000, data_dir))
    from app.main import create_app  # after the environment is set
    from app.settings import Settings
    from bench.floor import create as create_floor

    service = create_app(Settings())
    floor = create_floor(f"{upstream}/v1")
    body = orjson.dumps({**orjson.loads(run.CHAT_BODY), "stream": True}) if args.stream else run.CHAT_BODY
    path = "/v1/chat/completions"
    async with contextlib.AsyncExitStack() as stack:
        for app in (service, floor):
            await stack.enter_async_context(app.router.lifespan_context(app))
        targets: dict[str, Asgi] = {"floor": floor, "service": service}
        for app in targets.values():
            await batch(app, path, body, 100, args.concurrency)  # warm-up
        best: dict[str, float] = {}
        for i in range(args.batches):
            for name, app in targets.items():
                cpu = await batch(app, path, body, args.requests, args.concurrency)
                best[name] = min(best.get(name, cpu), cpu)
            floor_ms, service_ms = 1000 * best["floor"], 1000 * best["service"]
            ratio = best["service"] / best["floor"]
            print(f"batch {i + 1}, best: floor {floor_ms:.3f} ms, service {service_ms:.3f} ms: {ratio:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--stream", action="store_true", help="64-chunk streams instead of plain requests")
    args = parser.parse_args()
    port = run.free_port()
    upstream = f"http://127.0.0.1:{port}"
    upstream_args = [run.PY, "-m", "bench.upstream", "--port", str(port), "--chunks", str(run.CHUNKS)]
    with tempfile.TemporaryDirectory() as tmp, run.process(upstream_args, ready=f"{upstream}/v1/models"):
        uvloop.run(measure(args, upstream, tmp))


if __name__ == "__main__":
    main()
