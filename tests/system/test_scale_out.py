"""Two replicas on loopback sharing the real PostgreSQL and Redis of this machine (what the
compose `scale` profile runs behind nginx): a conversation started on one continues on the
other, and a key's rate limit holds across both."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import POSTGRES, REDIS
from tests.processes import free_port, stop, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "scale-out-admin-token-0123456789"


class EchoUpstream(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream whose answer is every user message it was sent, joined by
    `|`: what it answers shows which history reached it."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        answer = json.dumps(
            {
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "|".join(users)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    name = f"genserve_scale_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def replicas(echo_upstream: str, postgres_database: str) -> Iterator[tuple[str, str]]:
    """Two service processes, one database, one Redis (under a prefix of this test's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENSERVE_", "OPENAI_"))} | {
        "GENSERVE_PROVIDER": "openai",
        "OPENAI_BASE_URL": echo_upstream,
        "OPENAI_API_KEY": "sk-scale-out-test",
        "GENSERVE_UPSTREAM_MAX_RETRIES": "0",
        "DATABASE_URL": postgres_database,
        "REDIS_URL": REDIS,
        "GENSERVE_REDIS_PREFIX": f"genserve-test:{uuid.uuid4().hex[:12]}:",
        "GENSERVE_AUTH_MODE": "keys",
        "GENSERVE_ADMIN_TOKEN": ADMIN,
        "GENSERVE_LOG_LEVEL": "WARNING",
    }
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(2):  # one after the other: the first applies the migrations
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=ROOT,
                env={**env, "GENSERVE_PORT": str(port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
            wait_until_up(f"{urls[-1]}/readyz", proc)
        yield urls[0], urls[1]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            stop(proc)


def new_key(base: str, **limits: int) -> dict[str, str]:
    r = httpx.post(
        f"{base}/admin/keys",
        json={"name": "scale-out", "limits": limits},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['key']}"}


def test_a_conversation_continues_on_the_other_replica(replicas: tuple[str, str]) -> None:
    a, b = replicas
    key = new_key(a)  # created on one replica, accepted by both
    with httpx.Client(timeout=30, headers=key) as client:
        conversation = client.post(f"{a}/v1/conversations", json={"model": "gpt-4o-mini"}).json()["id"]
        first = client.post(f"{a}/v1/conversations/{conversation}/messages", json={"content": "one"})
        assert first.status_code == 200, first.text
        second = client.post(f"{b}/v1/conversations/{conversation}/messages", json={"content": "two"})
        assert second.status_code == 200, second.text
        third = client.post(f"{a}/v1/conversations/{conversation}/messages", json={"content": "three"})
        history = client.get(f"{b}/v1/conversations/{conversation}").json()

    # What the upstream was sent by replica B included the turn taken on replica A, and back.
    assert "one|two" in json.dumps(second.json())
    assert "one|two|three" in json.dumps(third.json())
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "one"),
        ("assistant", "one"),
        ("user", "two"),
        ("assistant", "one|two"),
        ("user", "three"),
        ("assistant", "one|two|three"),
    ]


def test_a_rate_limit_holds_across_replicas(replicas: tuple[str, str]) -> None:
    a, b = replicas
    key = new_key(b, requests_per_minute=6)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30, headers=key) as client:
            replies = await asyncio.gather(
                *(client.post(f"{url}/v1/chat/completions", json=body) for url in (a, b) * 8)
            )
        return [r.status_code for r in replies]

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 6, statuses
    assert statuses.count(429) == 10, statuses
