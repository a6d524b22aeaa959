"""`python -m app` serves as the settings say: here, whose address a request comes from when a
proxy stands in front (the address the failed-login throttle counts by)."""

from __future__ import annotations

import httpx
import pytest

from app.__main__ import server_options
from app.main import create_app
from tests.access_helpers import ADMIN, ADMIN_TOKEN, PRICED_MODELS, bearer
from tests.conftest import openai_settings, serve_in_thread

WRONG = bearer("gs-wrong-" + "x" * 40)


async def failed_logins_then_another_client(forwarded_allow_ips: str) -> int:
    """Three failed logins said to come from one client, then a good key said to come from
    another: the status the second client gets."""
    settings = openai_settings(
        auth_mode="keys",
        admin_token=ADMIN_TOKEN,
        models=PRICED_MODELS,
        auth_failures_per_minute=3,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    options = {k: v for k, v in server_options(settings).items() if k not in ("host", "port")}
    with serve_in_thread(create_app(settings), **options) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post("/admin/keys", json={"name": "a"}, headers=ADMIN)
            assert r.status_code == 201, r.text
            secret = r.json()["key"]
            attacker = {"x-forwarded-for": "203.0.113.5"}
            for _ in range(3):
                assert (await client.get("/v1/models", headers={**WRONG, **attacker})).status_code == 401
            blocked = await client.get("/v1/models", headers={**WRONG, **attacker})
            assert blocked.status_code == 429
            other = {**bearer(secret), "x-forwarded-for": "198.51.100.7"}
            return (await client.get("/v1/models", headers=other)).status_code


async def test_behind_a_trusted_proxy_failed_logins_are_counted_per_client() -> None:
    # The test's client connects from loopback, which plays the proxy here.
    assert await failed_logins_then_another_client("127.0.0.1") == 200


@pytest.mark.parametrize("trusted", ["192.0.2.1", ""])
async def test_a_peer_that_is_not_a_trusted_proxy_cannot_claim_another_address(trusted: str) -> None:
    assert await failed_logins_then_another_client(trusted) == 429
