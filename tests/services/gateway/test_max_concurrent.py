"""`max_concurrent`: a key's generations in flight at once, beside its other limits; held
across replicas through Redis, in memory without it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from tests.access_helpers import ADMIN, bearer, chat_body, completion, create_key, keys_app, running


class Held:
    """An upstream that answers only when released."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self.calls = 0
        router.post("/chat/completions").mock(side_effect=self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.arrived.set()
        await self.release.wait()
        return httpx.Response(200, json=completion())

    async def called(self) -> None:
        async with asyncio.timeout(10):
            await self.arrived.wait()


@pytest.mark.parametrize("shared", ["memory", "redis"])
async def test_a_key_runs_at_most_max_concurrent_generations(
    upstream: respx.MockRouter, redis_prefix: str, tmp_path: object, shared: str
) -> None:
    held = Held(upstream)
    db = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    prefix = redis_prefix if shared == "redis" else None
    a = keys_app(redis_prefix=prefix, database_url=db)
    b = keys_app(redis_prefix=prefix, database_url=db)
    async with running(a) as one, running(b) as other:
        two = other if shared == "redis" else one  # without Redis, one replica knows its own
        key_id, secret = await create_key(one, limits={"max_concurrent": 1})
        info = (await one.get(f"/admin/keys/{key_id}", headers=ADMIN)).json()
        assert info["limits"]["max_concurrent"] == 1
        first = asyncio.create_task(
            one.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        )
        await held.called()
        r = await two.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        assert r.status_code == 429, r.text
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "too_many_concurrent_requests")
        assert r.headers["retry-after"]
        assert held.calls == 1
        held.release.set()
        assert (await first).status_code == 200
        r = await two.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        assert r.status_code == 200, r.text
