"""Generations without PostgreSQL (issue 23 §2): replica processes on a private PostgreSQL that
the tests stop, restart and make read-only. While it is away generations are answered (keys from
the cache, records and usage to the spool on disk); when it is back every row appears exactly
once; a full spool is refused with 503 and Retry-After; a replica killed with a full spool
replays it at its next start; a key revoked meanwhile is refused once the database answers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tests.conftest import serve_in_thread
from tests.private_postgres import PrivatePostgres
from tests.processes import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "pg-degrade-admin-token-0123456789"


def fake_upstream() -> FastAPI:
    """Answers every chat request with 5 prompt + 3 completion tokens, as JSON or as a stream."""
    app = FastAPI()
    head = {"id": "chatcmpl-fake", "created": 1_700_000_000, "model": "gpt-4o-mini"}
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> dict[str, Any] | StreamingResponse:
        if not (await request.json()).get("stream"):
            message = {"role": "assistant", "content": "hi there you"}
            return head | {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }

        async def frames() -> AsyncIterator[bytes]:
            chunk = head | {"object": "chat.completion.chunk"}
            for word in ("hi ", "there ", "you"):
                delta = {"role": "assistant", "content": word}
                yield f"data: {json.dumps(chunk | {'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode()
            done = {"index": 0, "delta": {}, "finish_reason": "stop"}
            yield f"data: {json.dumps(chunk | {'choices': [done]})}\n\n".encode()
            yield f"data: {json.dumps(chunk | {'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    return app


class Replica:
    """One `python -m app` process with its own data directory (its spool)."""

    def __init__(self, pg: PrivatePostgres, upstream: str, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GENSERVE_", "OPENAI_"))}
        self.env |= {
            "DATABASE_URL": pg.sqlalchemy_url,
            "GENSERVE_DATA_DIR": str(data_dir),
            "GENSERVE_AUTH_MODE": "keys",
            "GENSERVE_ADMIN_TOKEN": ADMIN,
            "GENSERVE_LOG_LEVEL": "WARNING",
            "GENSERVE_PORT": str(self.port),
            "GENSERVE_PROVIDER": "openai",
            "GENSERVE_OPENAI_API_KEY": "sk-fake-upstream-key-0000",
            "GENSERVE_OPENAI_BASE_URL": upstream + "/v1",
            "GENSERVE_UPSTREAM_MAX_RETRIES": "0",
            "GENSERVE_KEY_CACHE_SECONDS": "0.05",  # lapses at once: the outage path is the one taken
            "GENSERVE_USAGE_FLUSH_SECONDS": "0",  # each answer's usage is written (or spooled) at once
            "GENSERVE_RECORDS_FLUSH_SECONDS": "0",
        } | {f"GENSERVE_{k.upper()}": v for k, v in env.items()}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-replica.log"

    def start(self) -> None:
        # The log goes to a file: a pipe nobody reads would fill and stall the replica.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app"], cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        wait_until_up(f"{self.url}/healthz", self.proc, timeout=120)

    def __enter__(self) -> Replica:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")


def sql(pg: PrivatePostgres, query: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(pg.url)
        try:
            return await conn.fetch(query)
        finally:
            await conn.close()

    return asyncio.run(run())


def execute(pg: PrivatePostgres, *statements: str) -> None:
    """Statements one after another in one session, e.g. a SET before what it allows."""

    async def run() -> None:
        conn = await asyncpg.connect(pg.url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


def generate(url: str, key: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def stored(pg: PrivatePostgres) -> tuple[int, int, int]:
    """(records, distinct record ids, usage requests)."""
    records = sql(pg, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM generation_records")[0]
    usage = sql(pg, "SELECT coalesce(sum(requests), 0) AS n FROM usage_daily")[0]
    return int(records["n"]), int(records["d"]), int(usage["n"])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[PrivatePostgres, str]]:
    # Under /tmp itself: the postgres user (when run as root) must reach it, and pytest's
    # tmp_path sits in a directory only root may enter.
    pg_root = Path(tempfile.mkdtemp(prefix="pg-degrade-"))
    pg = PrivatePostgres(pg_root)
    pg.start()
    try:
        with serve_in_thread(fake_upstream()) as upstream:
            yield pg, upstream.url
    finally:
        pg.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


def new_key(url: str) -> str:
    r = httpx.post(
        f"{url}/admin/keys", json={"name": "degrade"}, headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["key"])


def test_generations_are_answered_while_postgres_is_down_and_stored_once_after(
    world: tuple[PrivatePostgres, str], tmp_path: Path
) -> None:
    pg, upstream = world
    with Replica(pg, upstream, tmp_path / "a") as replica:
        key = new_key(replica.url)
        assert generate(replica.url, key).status_code == 200  # the key is now cached
        pg.stop()
        answered = [generate(replica.url, key, stream=n % 2 == 1) for n in range(10)]
        assert [r.status_code for r in answered] == [200] * 10
        for r in answered[1::2]:  # streams end well, never with database_unavailable
            assert "database_unavailable" not in r.text
            assert r.text.rstrip().endswith("data: [DONE]")
        # What needs stored data still says so, with Retry-After.
        r = httpx.post(f"{replica.url}/v1/conversations", json={}, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 503
        assert "retry-after" in r.headers
        until(lambda: replica.metric("genserve_spool_rows") >= 20, 10, "10 records and 10 usage rows spooled")
        pg.start()
        until(lambda: replica.metric("genserve_spool_rows") == 0, 15, "the spool drained")
        assert stored(pg) == (11, 11, 11)
        # A key revoked while this replica could not read it is refused once the database answers.
        sql(pg, "UPDATE api_keys SET revoked_at = now()")
        r = generate(replica.url, key)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "revoked_api_key"


def test_a_full_spool_refuses_and_a_killed_replica_replays_it(
    world: tuple[PrivatePostgres, str], tmp_path: Path
) -> None:
    pg, upstream = world
    with Replica(pg, upstream, tmp_path / "a", spool_max_bytes="4096") as replica:
        key = new_key(replica.url)
        assert generate(replica.url, key).status_code == 200
        until(lambda: stored(pg) == (1, 1, 1), 15, "the answer before the outage stored")
        pg.stop()
        answered = 1
        refused = None
        for _ in range(100):
            r = generate(replica.url, key)
            if r.status_code != 200:
                refused = r
                break
            answered += 1
        assert refused is not None, "the spool never filled"
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "spool_full"
        assert float(refused.headers["retry-after"]) > 0
        until(lambda: replica.metric("genserve_records_pending") == 0, 10, "every record spooled")
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGKILL)
        replica.proc.wait(timeout=10)
        pg.start()
        assert stored(pg)[0] == 1  # only the answer made before the outage
        replica.start()  # the same data directory: the spool it left
        until(lambda: replica.metric("genserve_spool_rows") == 0, 15, "the spool replayed")
        assert stored(pg) == (answered, answered, answered)


def test_read_only_postgres_spools_writes_and_keeps_answering(
    world: tuple[PrivatePostgres, str], tmp_path: Path
) -> None:
    pg, upstream = world
    with Replica(pg, upstream, tmp_path / "a") as replica:
        key = new_key(replica.url)
        sql(pg, "ALTER DATABASE postgres SET default_transaction_read_only = on")
        # Sessions read the setting when they connect: cut the pool's so it applies now.
        sql(pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        assert [generate(replica.url, key).status_code for _ in range(5)] == [200] * 5
        until(lambda: replica.metric("genserve_spool_rows") >= 10, 10, "writes spooled")
        assert stored(pg) == (0, 0, 0)
        # This session is read-only too: lift it for itself before lifting it for the database.
        execute(
            pg,
            "SET default_transaction_read_only = off",
            "ALTER DATABASE postgres SET default_transaction_read_only = off",
        )
        sql(pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        until(lambda: replica.metric("genserve_spool_rows") == 0, 15, "the spool drained")
        assert stored(pg) == (5, 5, 5)
