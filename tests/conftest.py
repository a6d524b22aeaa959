"""Test fixtures. `openai` 3.x talks through `httpx2`; aliasing it as `httpx` before anything
imports `httpx` lets respx intercept the real SDK's requests (hence `-p no:respx` in the config:
its plugin would import `httpx` too early)."""

from __future__ import annotations

import httpx2

httpx2.alias_httpx()

import os  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator, Iterator  # noqa: E402
from contextlib import asynccontextmanager, contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import pytest  # noqa: E402
import respx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import LOCAL_DEFAULT_MODEL, Settings  # noqa: E402

UPSTREAM = "http://upstream.test/v1"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own keys or settings."""
    for key in list(os.environ):
        if key.startswith(("GENSERVE_", "OPENAI_")) or key in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(key, raising=False)


def make_settings(**overrides: object) -> Settings:
    """Settings for tests: never read `.env`, never the developer's environment."""
    values: dict[str, object] = {
        "environment": "test",
        "log_level": "WARNING",
        # Each app gets its own SQLite file unless a test names a database.
        "data_dir": tempfile.mkdtemp(prefix="genserve-test-"),
        # Repeated seeded requests would be answered from the response cache and stop exercising
        # the model; the cache's own tests turn it on.
        "cache_enabled": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def openai_settings(**overrides: object) -> Settings:
    """An app whose models are served by a (mocked) OpenAI-compatible upstream."""
    values: dict[str, object] = {
        "provider": "openai",
        "openai_api_key": "sk-test-secret-key-0000",
        "openai_base_url": UPSTREAM,
        "upstream_max_retries": 0,
        "openai_timeout": 2.0,
        "openai_http_transport": "httpx",
    }
    values.update(overrides)
    return make_settings(**values)


@asynccontextmanager
async def serving(
    app: FastAPI,
    *,
    base_url: str = "http://genserve.test",
    timeout: float = 60.0,  # noqa: ASYNC109 - the HTTP client's timeout
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """The one way tests talk to an app in-process: run its lifespan, then an HTTP client into it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=timeout) as client:
            yield client


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as client:
        yield client


@pytest.fixture(scope="session")
async def local_app() -> AsyncIterator[FastAPI]:
    """One app with the real embedded model, shared by the whole session (loading costs time)."""
    # One thread: the test machine is shared, and spinning llama.cpp threads slow down under load.
    app = create_app(make_settings(provider="local", local_n_threads=1))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def local_client(local_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=local_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test", timeout=60) as client:
        yield client


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    """The mocked OpenAI HTTP API the OpenAI provider talks to."""
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def openai_client(upstream: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(create_app(openai_settings())):
        yield client


# -- a real HTTP server, for clients that cannot use an ASGI transport (the sync SDK) ------------


@dataclass(frozen=True)
class LiveServer:
    app: FastAPI
    url: str
    """Base URL, e.g. `http://127.0.0.1:PORT`."""


@contextmanager
def serve_in_thread(app: FastAPI, **options: object) -> Iterator[LiveServer]:
    """Run `app` (lifespan included) under uvicorn on a free loopback port in a background thread;
    `options` are uvicorn's, over a plain default."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    defaults: dict[str, object] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "loop": "asyncio",
        "http": "h11",
        "ws": "none",
    }
    config = uvicorn.Config(app, **{**defaults, **options})  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert server.started, "the test server did not start"
        yield LiveServer(app=app, url=f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def mixed_settings(**overrides: object) -> Settings:
    """Both providers: the embedded model and a mocked upstream, under their usual names."""
    values: dict[str, object] = {
        "models": {
            LOCAL_DEFAULT_MODEL: {"provider": "local", "context_window": 2048, "max_output_tokens": 2048},
            "gpt-4o-mini": {"provider": "openai"},
        },
        "local_n_threads": 1,
    }
    values.update(overrides)
    return openai_settings(**values)


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    """The service over real HTTP, serving the embedded model and `gpt-4o-mini` (mock upstream:
    activate the `upstream` fixture in tests that use it)."""
    with serve_in_thread(create_app(mixed_settings())) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    """Storage tests run against both engines: a SQLite file, and a fresh database on the
    real PostgreSQL of this machine (dropped afterwards, so parallel runs never collide)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/genserve.db"
        return
    name = f"genserve_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(POSTGRES)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own on the shared real Redis."""
    return f"genserve-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis(redis_prefix: str) -> AsyncIterator[Redis]:
    """A client of the shared real Redis; this test's keys are deleted afterwards."""
    client = Redis.from_url(REDIS)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
