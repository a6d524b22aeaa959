"""A batch survives a replica's death and is shared by replicas: two replica processes on one
PostgreSQL run a 500-line chat batch against a fake upstream; one is killed (SIGKILL) halfway;
the other finishes, and the output file holds 500 lines, each custom_id once, each answer the
upstream's answer to that line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request

from tests.conftest import POSTGRES, serve_in_thread
from tests.processes import free_port, stop, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "batch-crash-admin-token-0123456789"
LINES = 500


def fake_upstream() -> FastAPI:
    """An OpenAI-compatible upstream that answers each chat request with its question, a little
    later (so that the kill lands while lines are in flight)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        asked = (await request.json())["messages"][-1]["content"]
        await asyncio.sleep(0.01)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"re: {asked}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }

    return app


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    name = f"genserve_batch_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}",
            f"postgresql://postgres@127.0.0.1:5432/{name}",
        )
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def replica(database_url: str, upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENSERVE_", "OPENAI_"))}
    port = free_port()
    env |= {
        "DATABASE_URL": database_url,
        "GENSERVE_AUTH_MODE": "keys",
        "GENSERVE_ADMIN_TOKEN": ADMIN,
        "GENSERVE_LOG_LEVEL": "WARNING",
        "GENSERVE_PORT": str(port),
        "GENSERVE_PROVIDER": "openai",
        "GENSERVE_OPENAI_API_KEY": "sk-fake-upstream-key-0000",
        "GENSERVE_OPENAI_BASE_URL": upstream + "/v1",
        "GENSERVE_UPSTREAM_MAX_RETRIES": "0",
        "GENSERVE_BATCH_LEASE_SECONDS": "5",
        "GENSERVE_BATCH_POLL_SECONDS": "0.2",
        "GENSERVE_BATCH_CONCURRENCY": "4",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/readyz", proc, timeout=120)
    return proc, url


def test_a_killed_replica_leaves_every_line_answered_once(database: tuple[str, str]) -> None:
    url_async, url_plain = database
    with serve_in_thread(fake_upstream()) as upstream:
        a, url_a = replica(url_async, upstream.url)
        procs = [a]
        cleanup: list[Callable[[], None]] = []
        try:
            b, url_b = replica(url_async, upstream.url)
            procs.append(b)
            key = httpx.post(
                f"{url_a}/admin/keys", json={"name": "nightly"}, headers={"authorization": f"Bearer {ADMIN}"}
            ).json()["key"]
            client = httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=60)
            cleanup.append(client.close)
            lines = b"".join(
                json.dumps(
                    {
                        "custom_id": f"line-{n}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{n}"}]},
                    }
                ).encode()
                + b"\n"
                for n in range(LINES)
            )
            r = client.post(
                f"{url_a}/v1/files", files={"file": ("in.jsonl", lines)}, data={"purpose": "batch"}
            )
            assert r.status_code == 200, r.text
            batch = client.post(
                f"{url_a}/v1/batches",
                json={
                    "input_file_id": r.json()["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            ).json()["id"]

            def state() -> dict[str, Any]:
                r = client.get(f"{url_b}/v1/batches/{batch}")
                assert r.status_code == 200, r.text
                return dict(r.json())

            deadline = time.monotonic() + 300
            while state()["request_counts"]["completed"] < LINES // 3:
                assert time.monotonic() < deadline, "the replicas run nothing"
                time.sleep(0.05)
            os.kill(a.pid, signal.SIGKILL)  # mid-batch: it holds leases on the lines it was running
            stop(a)
            halfway = state()["request_counts"]["completed"]
            assert halfway < LINES

            while (now := state())["status"] != "completed":
                assert now["status"] in ("in_progress", "finalizing"), now
                assert time.monotonic() < deadline, f"replica B does not finish: {now}"
                time.sleep(0.1)
            assert now["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
            assert now["error_file_id"] is None
            output = client.get(f"{url_b}/v1/files/{now['output_file_id']}/content")
            rows = [json.loads(row) for row in output.text.splitlines()]
            assert sorted(row["custom_id"] for row in rows) == sorted(f"line-{n}" for n in range(LINES))
            for row in rows:
                asked = row["custom_id"].removeprefix("line-")
                assert row["response"]["body"]["choices"][0]["message"]["content"] == f"re: q{asked}"

            async def workers() -> int:
                conn = await asyncpg.connect(url_plain)
                try:
                    return int(await conn.fetchval("SELECT count(DISTINCT leased_by) FROM batch_lines"))
                finally:
                    await conn.close()

            assert asyncio.run(workers()) >= 2  # both replicas ran lines of the one batch
        finally:
            for close in cleanup:
                close()
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    stop(proc)
