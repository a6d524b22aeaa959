"""The playground's origin serves no third-party scripts by default, and /metrics can require
a token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.main import create_app
from tests.conftest import make_settings


async def client_for(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(provider="openai", openai_api_key="sk-test-0000", **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test") as client:
            yield client


async def test_api_docs_are_off_by_default() -> None:
    async for client in client_for():
        for path in ("/docs", "/redoc"):
            r = await client.get(path)
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "not_found"
        assert (await client.get("/openapi.json")).status_code == 200  # the schema itself stays


async def test_api_docs_can_be_turned_on() -> None:
    async for client in client_for(api_docs=True):
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/redoc")).status_code == 200


async def test_metrics_are_open_without_a_token() -> None:
    async for client in client_for():
        assert (await client.get("/metrics")).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-value", "Basic abc"])
async def test_metrics_need_the_token_when_one_is_set(header: str | None) -> None:
    token = "metrics-token-0123456789abcdef"
    async for client in client_for(metrics_token=token):
        headers = {"authorization": header} if header else {}
        r = await client.get("/metrics", headers=headers)
        assert r.status_code == 401
        error = r.json()["error"]
        assert error["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
        ok = await client.get("/metrics", headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert "genserve_" in ok.text
