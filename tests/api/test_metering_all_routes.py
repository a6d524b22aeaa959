"""Every authenticated route counts against its key's request limit (not only generation), and
failed authentication is throttled per client address."""

from __future__ import annotations

import httpx
import pytest
import respx

from tests.access_helpers import bearer, completion, create_key, keys_app, running


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/models", None),
        ("GET", "/v1/usage", None),
        ("GET", "/v1/feedback/summary", None),
        ("POST", "/v1/feedback", {"generation_id": "gen-missing", "rating": 1}),
        ("GET", "/v1/presets/summarize/tuning", None),
        ("POST", "/v1/conversations", {}),
        ("GET", "/v1/conversations", None),
    ],
)
async def test_non_generating_routes_count_against_the_request_limit(
    upstream: respx.MockRouter, method: str, path: str, body: object
) -> None:
    async with running(keys_app()) as client:
        _, secret = await create_key(client, limits={"requests_per_minute": 3})
        statuses = [
            (await client.request(method, path, json=body, headers=bearer(secret))).status_code
            for _ in range(3)
        ]
        assert 429 not in statuses, statuses
        r = await client.request(method, path, json=body, headers=bearer(secret))
        assert r.status_code == 429, r.text
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "Hi", "max_tokens": 5}),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "Hi", "store": False}),
        ("/v1/generate", {"model": "gpt-4o-mini", "prompt": "Hi"}),
    ],
)
async def test_a_generating_route_counts_each_request_once(
    upstream: respx.MockRouter, path: str, body: dict[str, object]
) -> None:
    """A route that meters its jobs is not counted again at the door: a key allowed three
    requests a minute gets three answers, then a 429."""
    upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        _, secret = await create_key(client, limits={"requests_per_minute": 3})
        statuses = [
            (await client.post(path, json=body, headers=bearer(secret))).status_code for _ in range(4)
        ]
    assert statuses == [200, 200, 200, 429]


async def test_failed_authentication_is_throttled_per_address(upstream: respx.MockRouter) -> None:
    app = keys_app(auth_failures_per_minute=5)
    async with running(app) as client:
        _, secret = await create_key(client)
        for _ in range(5):
            r = await client.get("/v1/models", headers=bearer("gs-wrong-" + "x" * 40))
            assert r.status_code == 401
        r = await client.get("/v1/models", headers=bearer("gs-wrong-" + "y" * 40))
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "too_many_failed_attempts"
        assert int(r.headers["retry-after"]) >= 1
        # Even the right key waits: a guess that succeeds must not be told apart while blocked.
        assert (await client.get("/v1/models", headers=bearer(secret))).status_code == 429
        # Another address is not affected.
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test") as other:
            assert (await other.get("/v1/models", headers=bearer(secret))).status_code == 200
