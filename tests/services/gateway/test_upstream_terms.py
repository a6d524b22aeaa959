"""`store` and `service_tier` change the operator's terms with the upstream (data retention,
billing tier): they are settings of each model route, and a client may set them only where the
route allows it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from app.main import create_app
from tests.conftest import openai_settings
from tests.upstream_faults import ok

CHAT = "/v1/chat/completions"


async def client_with(models: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(openai_settings(models=models))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test") as client:
            yield client


def chat(model: str, **more: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **more}


@pytest.mark.parametrize(("param", "value"), [("store", True), ("service_tier", "priority")])
async def test_a_client_may_not_change_the_upstream_terms_by_default(
    upstream: respx.MockRouter, param: str, value: object
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=ok())
    async for client in client_with({"m": {"provider": "openai"}}):
        r = await client.post(CHAT, json=chat("m", **{param: value}))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "parameter_not_allowed"
    assert not route.called


async def test_the_operator_sets_them_per_route(upstream: respx.MockRouter) -> None:
    route = upstream.post("/chat/completions").mock(return_value=ok())
    models = {
        "kept": {"provider": "openai", "store": False, "service_tier": "flex"},
        "plain": {"provider": "openai"},
    }
    async for client in client_with(models):
        assert (await client.post(CHAT, json=chat("kept"))).status_code == 200
        assert (await client.post(CHAT, json=chat("plain"))).status_code == 200
    kept, plain = (json.loads(call.request.content) for call in route.calls)
    assert (kept["store"], kept["service_tier"]) == (False, "flex")
    assert "store" not in plain
    assert "service_tier" not in plain


async def test_a_route_can_let_clients_choose(upstream: respx.MockRouter) -> None:
    route = upstream.post("/chat/completions").mock(return_value=ok())
    models = {"open": {"provider": "openai", "store": False, "client_params": ["store"]}}
    async for client in client_with(models):
        assert (await client.post(CHAT, json=chat("open"))).status_code == 200
        assert (await client.post(CHAT, json=chat("open", store=True))).status_code == 200
        r = await client.post(CHAT, json=chat("open", service_tier="priority"))
        assert r.status_code == 400
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert first["store"] is False  # the route's value when the client sends none
    assert second["store"] is True
