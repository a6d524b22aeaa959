"""`BENCH_ONLY=batches make bench`: a 2,000-line chat batch against the fake upstream, compared
with the same 2,000 requests sent by a client at the same concurrency as the batch's
(`GENSERVE_BATCH_CONCURRENCY`), and the p50 of interactive requests sent one at a time while
the batch runs, compared with the same requests on an idle service.

Targets (issue 21): batch lines/s >= 0.9x the client's; interactive p50 during the batch <= 1.2x.

The machine is shared, so throughput is measured in ROUNDS alternating rounds (client then batch,
batch then client, ...) without interactive traffic, and the ratio reported is the median of the
rounds' ratios; the interactive latencies are measured after that, on an idle service and during
one more batch.
Prints a Markdown table; `docs/batches.md` carries the figures of the last run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time

import httpx
import orjson

from bench.run import PY, free_port, process, service_env, wait_ready

LINES = 2_000
ROUNDS = int(os.environ.get("BENCH_BATCH_ROUNDS", "3"))
CONCURRENCY = 8
UPSTREAM_DELAY_MS = "5"
"""A little upstream latency, so that concurrency (not the CPU) sets the pace, as it does for a
real model."""
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}


async def client_run(service: str) -> float:
    """Seconds for a client to send LINES requests at CONCURRENCY."""
    queue = iter(range(LINES))
    async with httpx.AsyncClient(base_url=service, timeout=60) as client:

        async def worker() -> None:
            for _ in queue:
                r = await client.post("/v1/chat/completions", json=BODY)
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - start


async def interactive(client: httpx.AsyncClient, until: asyncio.Event | None, count: int) -> list[float]:
    """Latencies (ms) of chat requests sent one at a time: `count` of them, or until `until`."""
    samples: list[float] = []
    while (until is None and len(samples) < count) or (until is not None and not until.is_set()):
        start = time.perf_counter()
        r = await client.post("/v1/chat/completions", json=BODY)
        r.raise_for_status()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def batch_run(service: str, *, probe_latency: bool) -> tuple[float, list[float]]:
    """Seconds from creating a LINES-line batch to `completed`, and the interactive latencies
    measured meanwhile (if asked)."""
    lines = b"".join(
        orjson.dumps({"custom_id": f"l{n}", "method": "POST", "url": "/v1/chat/completions", "body": BODY})
        + b"\n"
        for n in range(LINES)
    )
    async with httpx.AsyncClient(base_url=service, timeout=60) as client:
        uploaded = (
            await client.post("/v1/files", files={"file": ("b.jsonl", lines)}, data={"purpose": "batch"})
        ).json()
        done = asyncio.Event()
        start = time.perf_counter()
        batch = (
            await client.post(
                "/v1/batches",
                json={
                    "input_file_id": uploaded["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            )
        ).json()
        if probe_latency:
            probe = asyncio.create_task(interactive(client, done, 0))
        while True:
            status = (await client.get(f"/v1/batches/{batch['id']}")).json()
            if status["status"] in ("completed", "failed", "expired", "cancelled"):
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
        done.set()
        samples = await probe if probe_latency else []
        counts = status["request_counts"]
        if status["status"] != "completed" or counts["completed"] != LINES:
            sys.exit(f"the batch did not complete: {status['status']} {counts}")
        return elapsed, samples


async def measure(service: str) -> str:
    async with httpx.AsyncClient(base_url=service, timeout=60) as client:
        await interactive(client, None, 50)  # warm-up
    ratios: list[float] = []
    client_rates: list[float] = []
    batch_rates: list[float] = []
    for n in range(ROUNDS):
        if n % 2 == 0:
            client_seconds = await client_run(service)
            batch_seconds, _ = await batch_run(service, probe_latency=False)
        else:
            batch_seconds, _ = await batch_run(service, probe_latency=False)
            client_seconds = await client_run(service)
        client_rates.append(LINES / client_seconds)
        batch_rates.append(LINES / batch_seconds)
        ratios.append(batch_rates[-1] / client_rates[-1])
    async with httpx.AsyncClient(base_url=service, timeout=60) as client:
        idle = await interactive(client, None, 300)
    _, during = await batch_run(service, probe_latency=True)
    idle_p50, busy_p50 = statistics.median(idle), statistics.median(during)
    each = ", ".join(f"{r:.2f}" for r in ratios)
    rows = [
        "| measure | value | target |",
        "|---|---|---|",
        f"| client, {LINES} requests at c={CONCURRENCY} (median of {ROUNDS}) "
        f"| {statistics.median(client_rates):.0f} req/s | |",
        f"| batch, {LINES} lines (concurrency {CONCURRENCY}, median of {ROUNDS}) "
        f"| {statistics.median(batch_rates):.0f} lines/s | |",
        f"| batch / client, median of the rounds ({each}) | {statistics.median(ratios):.2f}x | >= 0.9x |",
        f"| interactive p50, idle | {idle_p50:.1f} ms | |",
        f"| interactive p50, during the batch ({len(during)} requests) | {busy_p50:.1f} ms | |",
        f"| during / idle | {busy_p50 / idle_p50:.2f}x | <= 1.2x |",
    ]
    return "\n".join(rows)


def main() -> None:
    up_port, svc_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    service = f"http://127.0.0.1:{svc_port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = service_env(upstream, svc_port, tmp) | {
            "GENSERVE_LOG_LEVEL": "WARNING",
            "GENSERVE_BATCH_CONCURRENCY": str(CONCURRENCY),
            "GENSERVE_BATCH_POLL_SECONDS": "0.5",
            "GENSERVE_FILES_MAX_BYTES": str(64 << 20),
        }
        with (
            process([PY, "-m", "bench.upstream", "--port", str(up_port), "--delay-ms", UPSTREAM_DELAY_MS]),
            process([PY, "-m", "app"], env=env, ready=f"{service}/readyz"),
        ):
            wait_ready(f"{upstream}/v1/models")
            print(asyncio.run(measure(service)))


if __name__ == "__main__":
    main()
