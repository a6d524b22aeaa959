"""What a client sees while something behind the service is down: 502, 503 or 504 with
`Retry-After`, never a 500 (the findings of `make chaos`, tests/system/chaos.py)."""

from __future__ import annotations

import httpx
import pytest
import respx

from app.main import create_app
from tests import upstream_faults as faults
from tests.conftest import openai_settings, serving
from tests.processes import free_port

GEN = {"prompt": "Hi", "model": "gpt-4o-mini"}


async def test_an_upstream_500_is_a_502_with_retry_after(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=faults.error(500))
    r = await openai_client.post("/v1/generate", json=GEN)
    assert r.status_code == 502, r.text
    assert r.headers["retry-after"] == "1"


async def test_an_upstream_that_never_answers_is_a_504_with_retry_after(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").mock(side_effect=faults.slow(5))
    async with serving(create_app(openai_settings(openai_timeout=0.2, upstream_deadline=0.5))) as client:
        r = await client.post("/v1/generate", json=GEN)
    assert r.status_code == 504, r.text
    assert r.headers["retry-after"] == "1"


async def test_an_upstream_refusing_this_services_key_is_a_502_without_retry_after(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    """Waiting does not fix credentials: no Retry-After that would invite a retry loop."""
    upstream.post("/chat/completions").mock(return_value=faults.error(401))
    r = await openai_client.post("/v1/generate", json=GEN)
    assert r.status_code == 502, r.text
    assert "retry-after" not in r.headers


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/conversations", {"model": "gpt-4o-mini"}),
        ("GET", "/v1/conversations", None),
        ("GET", "/v1/usage", None),
    ],
)
async def test_an_unreachable_database_is_a_503_with_retry_after(
    upstream: respx.MockRouter, method: str, path: str, body: object
) -> None:
    """Found by `make chaos`: while PostgreSQL restarted, conversations answered 500."""
    nobody = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/genserve"
    settings = openai_settings(database_url=nobody, database_auto_migrate=False)
    async with serving(create_app(settings)) as client:
        r = await client.request(method, path, json=body)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "database_unavailable"
    assert r.headers["retry-after"] == "2"
