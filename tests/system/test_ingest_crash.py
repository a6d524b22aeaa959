"""Ingestion survives a replica's death: replica A starts ingesting a 200-file batch and is
killed (SIGKILL) halfway; replica B, on the same PostgreSQL, takes over the files whose lease A
held and the ones it never started, and every file ends `completed`, each with its chunks
stored exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import POSTGRES
from tests.processes import free_port, stop, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "ingest-crash-admin-token-0123456789"
FILES = 200


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    name = f"genserve_ingest_{uuid.uuid4().hex[:12]}"

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


def replica(database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENSERVE_", "OPENAI_"))}
    port = free_port()
    env |= {
        "DATABASE_URL": database_url,
        "GENSERVE_AUTH_MODE": "keys",
        "GENSERVE_ADMIN_TOKEN": ADMIN,
        "GENSERVE_LOG_LEVEL": "WARNING",
        "GENSERVE_PORT": str(port),
        "GENSERVE_INGEST_LEASE_SECONDS": "5",
        "GENSERVE_INGEST_POLL_SECONDS": "0.5",
        "GENSERVE_LOCAL_EMBED_THREADS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/readyz", proc, timeout=120)
    return proc, url


def counts(client: httpx.Client, url: str, store: str, batch: str) -> dict[str, int]:
    r = client.get(f"{url}/v1/vector_stores/{store}/file_batches/{batch}")
    assert r.status_code == 200, r.text
    result: dict[str, int] = r.json()["file_counts"]
    return result


def test_a_killed_replica_leaves_every_file_completed_once(database: tuple[str, str]) -> None:
    url_async, url_plain = database
    a, url_a = replica(url_async)
    b: subprocess.Popen[bytes] | None = None
    cleanup: list[Callable[[], None]] = []
    try:
        key = httpx.post(
            f"{url_a}/admin/keys",
            json={"name": "docs"},
            headers={"authorization": f"Bearer {ADMIN}"},
            timeout=30,
        ).json()["key"]
        client = httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=60)
        cleanup.append(client.close)
        ids = []
        for n in range(FILES):
            text = f"Document {n}: the code word of document {n} is word{n}x."
            r = client.post(
                f"{url_a}/v1/files",
                files={"file": (f"doc{n}.txt", text.encode())},
                data={"purpose": "assistants"},
            )
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        store = client.post(f"{url_a}/v1/vector_stores", json={"name": "crash"}).json()["id"]
        batch = client.post(f"{url_a}/v1/vector_stores/{store}/file_batches", json={"file_ids": ids}).json()[
            "id"
        ]

        deadline = time.monotonic() + 300
        while counts(client, url_a, store, batch)["completed"] < FILES // 4:
            assert time.monotonic() < deadline, "replica A ingests nothing"
            time.sleep(0.2)
        os.kill(a.pid, signal.SIGKILL)  # mid-batch: it holds a lease on the file it was ingesting
        stop(a)
        halfway = None

        b, url_b = replica(url_async)
        while (now := counts(client, url_b, store, batch))["in_progress"]:
            halfway = halfway or now
            assert time.monotonic() < deadline, f"replica B does not finish: {now}"
            time.sleep(0.2)
        assert now == {"in_progress": 0, "completed": FILES, "failed": 0, "cancelled": 0, "total": FILES}
        assert halfway is not None
        assert halfway["completed"] < FILES

        async def chunk_counts() -> list[int]:
            conn = await asyncpg.connect(url_plain)
            try:
                rows = await conn.fetch("SELECT file_id, count(*) FROM vector_store_chunks GROUP BY file_id")
            finally:
                await conn.close()
            return [r["count"] for r in rows]

        assert sorted(asyncio.run(chunk_counts())) == [1] * FILES  # each file's chunk stored once
        hit = client.post(
            f"{url_b}/v1/vector_stores/{store}/search", json={"query": "word137x", "max_num_results": 1}
        )
        assert hit.json()["data"][0]["filename"] == "doc137.txt"
    finally:
        for close in cleanup:
            close()
        if a.poll() is None:
            a.terminate()
            stop(a)
        if b is not None:
            b.terminate()
            stop(b)
