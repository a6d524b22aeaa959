"""Authentication is decided on the route a request matched, never on the raw path: serving
under a `root_path` or mounted inside another app changes nothing, and a route no rule opens
needs a key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import respx
from fastapi import FastAPI

from tests.access_helpers import ADMIN, bearer, chat_body, completion, keys_app

PREFIX = "/genserve"


@asynccontextmanager
async def behind(app: FastAPI, how: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a proxy that strips PREFIX (`root_path`), or mounted at PREFIX."""
    async with app.router.lifespan_context(app):
        if how == "root_path":
            transport = httpx.ASGITransport(app=app, root_path=PREFIX)
        else:
            parent = FastAPI()
            parent.mount(PREFIX, app)
            transport = httpx.ASGITransport(app=parent)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test") as client:
            yield client


async def check_deny_by_default(how: str, upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion("hello"))
    app = keys_app()
    async with behind(app, how) as client:
        r = await client.post(f"{PREFIX}/admin/keys", json={"name": "k"}, headers=ADMIN)
        assert r.status_code == 201, r.text
        secret = r.json()["key"]
        for method, path, body in (
            ("GET", "/v1/models", None),
            ("GET", "/v1/conversations", None),
            ("POST", "/v1/conversations", {}),
            ("POST", "/v1/chat/completions", chat_body()),
            ("GET", "/v1/usage", None),
        ):
            r = await client.request(method, f"{PREFIX}{path}", json=body)
            assert r.status_code == 401, (how, path, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
            r = await client.request(method, f"{PREFIX}{path}", json=body, headers=bearer(secret))
            assert r.status_code in (200, 201), (how, path, r.text)
        # Open routes stay open.
        assert (await client.get(f"{PREFIX}/healthz")).status_code == 200


async def test_a_root_path_does_not_skip_authentication(upstream: respx.MockRouter) -> None:
    await check_deny_by_default("root_path", upstream)


async def test_a_mounted_app_does_not_skip_authentication(upstream: respx.MockRouter) -> None:
    await check_deny_by_default("mount", upstream)


async def test_a_new_route_needs_a_key_unless_it_is_declared_open(upstream: respx.MockRouter) -> None:
    app = keys_app()

    @app.get("/internal/debug")
    async def debug() -> dict[str, str]:
        return {"secret": "yes"}

    async with behind(app, "root_path") as client:
        r = await client.get(f"{PREFIX}/internal/debug")
        assert r.status_code == 401, r.text
