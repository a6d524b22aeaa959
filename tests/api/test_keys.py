"""Client keys: the admin API, bearer authentication, permissions, and what may never leak."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
import respx
from pydantic import ValidationError
from sqlalchemy import text

from app.observability.logging import JsonFormatter
from app.storage.schema import Base
from tests.access_helpers import (
    ADMIN,
    bearer,
    chat_body,
    completion,
    create_key,
    keys_app,
    running,
)
from tests.clock import ManualClock
from tests.conftest import make_settings, openai_settings


def _assert_openai_error(r: httpx.Response, status: int, type_: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    return error


# --- settings that refuse to start ---------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "changethis", "short-token", "changeme"])
def test_keys_mode_refuses_a_missing_or_placeholder_admin_token(token: str | None) -> None:
    with pytest.raises(ValidationError, match="GENSERVE_ADMIN_TOKEN"):
        openai_settings(auth_mode="keys", admin_token=token)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_open_access_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ValidationError, match="auth_mode=none"):
        openai_settings(host=host)
    # ... unless the operator says something else authenticates callers, or keys are on.
    assert openai_settings(host=host, allow_open_access=True).auth_mode == "none"
    assert openai_settings(host=host, auth_mode="keys", admin_token="x" * 32).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_open_access_is_fine_on_loopback(host: str) -> None:
    assert make_settings(host=host).auth_mode == "none"


# --- authentication -------------------------------------------------------------------------------


async def test_a_key_created_by_the_admin_generates(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        r = await client.post("/admin/keys", json={"name": "frontend"}, headers=ADMIN)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["key"].startswith("gs-")
        assert created["status"] == "active"
        r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(created["key"]))
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "Hi there!"


async def test_missing_malformed_and_wrong_keys_get_401(upstream: respx.MockRouter) -> None:
    route = upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        _, secret = await create_key(client)
        r = await client.post("/v1/chat/completions", json=chat_body())
        error = _assert_openai_error(r, 401, "authentication_error")
        assert error["code"] == "missing_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = "gs-" + ("A" * 43)
        for header in (f"Basic {secret}", "Bearer", "Bearer ", "Bearer not-a-key", secret, f"Bearer {wrong}"):
            r = await client.post("/v1/chat/completions", json=chat_body(), headers={"authorization": header})
            _assert_openai_error(r, 401, "authentication_error")
            assert secret not in r.text
            assert wrong not in r.text
        # Every /v1 route needs the key, not only the generating ones.
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/v1/models", headers=bearer(secret))).status_code == 200
        # Health checks stay open to the load balancer.
        assert (await client.get("/healthz")).status_code == 200
    assert route.call_count == 0


async def test_the_openai_sdk_sends_the_key_we_expect(upstream: respx.MockRouter) -> None:
    """The official client's `api_key` arrives as the bearer key."""
    import openai

    upstream.post("/chat/completions").respond(json=completion())
    app = keys_app()
    async with running(app) as client:
        _, secret = await create_key(client)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test/v1") as http:
            sdk = openai.AsyncOpenAI(api_key=secret, base_url="http://genserve.test/v1", http_client=http)
            reply = await sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
            )
            assert reply.choices[0].message.content == "Hi there!"
            bad = openai.AsyncOpenAI(
                api_key="gs-" + "B" * 43, base_url="http://genserve.test/v1", http_client=http, max_retries=0
            )
            with pytest.raises(openai.AuthenticationError):
                await bad.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
                )
            _, limited = await create_key(
                client, limits={"requests_per_minute": 1}, allowed_models=["gpt-4o-mini"]
            )
            sdk = openai.AsyncOpenAI(
                api_key=limited, base_url="http://genserve.test/v1", http_client=http, max_retries=0
            )
            with pytest.raises(openai.PermissionDeniedError):
                await sdk.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
                )
            raw = await sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
            )
            assert raw.headers["x-ratelimit-remaining-requests"] == "0"
            with pytest.raises(openai.RateLimitError) as limited_error:
                await sdk.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
                )
            assert limited_error.value.code == "rate_limit_exceeded"


async def test_a_revoked_key_is_refused_at_once_on_every_replica(
    upstream: respx.MockRouter, redis_prefix: str, tmp_path: object
) -> None:
    """Both replicas cache the key; revoking it on one refuses it on the other's next request."""
    upstream.post("/chat/completions").respond(json=completion())
    db = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    a = keys_app(redis_prefix=redis_prefix, database_url=db)
    b = keys_app(redis_prefix=redis_prefix, database_url=db)
    async with running(a) as one, running(b) as two:
        key_id, secret = await create_key(one)
        for client in (one, two):  # now cached on both
            r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
            assert r.status_code == 200, r.text
        r = await one.delete(f"/admin/keys/{key_id}", headers=ADMIN)
        assert r.status_code == 200
        assert r.json()["status"] == "revoked"
        r = await two.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        error = _assert_openai_error(r, 401, "authentication_error")
        assert error["code"] == "revoked_api_key"


async def test_a_revoked_key_is_refused_at_once_without_redis(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        key_id, secret = await create_key(client)
        assert (
            await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        ).is_success
        await client.delete(f"/admin/keys/{key_id}", headers=ADMIN)
        r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        assert r.status_code == 401


async def test_an_expired_key_is_refused(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    clock = ManualClock()
    async with running(keys_app(clocks=clock.clocks)) as client:
        _, secret = await create_key(client, expires_at=time.time() + 60)
        assert (
            await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        ).is_success
        clock.advance(61)
        r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        error = _assert_openai_error(r, 401, "authentication_error")
        assert error["code"] == "expired_api_key"
        r = await client.post("/admin/keys", json={"name": "x", "expires_at": time.time() - 5}, headers=ADMIN)
        assert _assert_openai_error(r, 400, "invalid_request_error")["param"] == "expires_at"


async def test_a_key_reads_expired_and_past_expiries_are_refused_by_the_stores_own_clock() -> None:
    """The admin API's status and its `expires_at` check read the injected clock: a key that is
    active now reads `expired` once the clock passes its expiry, with no real time passing."""
    clock = ManualClock()
    clock.advance(86_400 * 365)  # a year ahead of the real clock
    async with running(keys_app(clocks=clock.clocks)) as client:
        soon = clock.clocks.wall() + 60
        key_id, _ = await create_key(client, expires_at=soon)
        assert (await client.get(f"/admin/keys/{key_id}", headers=ADMIN)).json()["status"] == "active"
        clock.advance(61)
        assert (await client.get(f"/admin/keys/{key_id}", headers=ADMIN)).json()["status"] == "expired"
        # In the real clock's future, but in the past of the store's own clock: refused.
        r = await client.post(
            "/admin/keys", json={"name": "x", "expires_at": time.time() + 3600}, headers=ADMIN
        )
        assert _assert_openai_error(r, 400, "invalid_request_error")["param"] == "expires_at"
        r = await client.patch(
            f"/admin/keys/{key_id}", json={"expires_at": time.time() + 3600}, headers=ADMIN
        )
        assert _assert_openai_error(r, 400, "invalid_request_error")["param"] == "expires_at"


# --- permissions -----------------------------------------------------------------------------------


async def test_a_model_the_key_may_not_use_is_403(upstream: respx.MockRouter) -> None:
    route = upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        _, secret = await create_key(client, allowed_models=["gpt-4o"])
        r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        error = _assert_openai_error(r, 403, "permission_error")
        assert error["param"] == "model"
        assert error["code"] == "model_not_allowed"
        r = await client.post(
            "/v1/generate",
            json={"prompt": "Hi", "model": "gpt-4o-mini", "stream": True},
            headers=bearer(secret),
        )
        assert r.status_code == 403
        assert route.call_count == 0
        r = await client.post("/v1/chat/completions", json=chat_body(model="gpt-4o"), headers=bearer(secret))
        assert r.status_code == 200
        # A model that does not exist cannot be allowed by mistake.
        r = await client.post("/admin/keys", json={"name": "x", "allowed_models": ["gpt-5"]}, headers=ADMIN)
        assert _assert_openai_error(r, 400, "invalid_request_error")["param"] == "allowed_models[0]"


async def test_a_preset_the_key_may_not_use_is_403(upstream: respx.MockRouter) -> None:
    route = upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        _, secret = await create_key(client, allowed_presets=["qa"])
        for stream in (False, True):
            r = await client.post(
                "/v1/presets/copywriting/generate",
                json={"inputs": {"kind": "ad", "topic": "tea"}, "stream": stream},
                headers=bearer(secret),
            )
            error = _assert_openai_error(r, 403, "permission_error")
            assert error["param"] == "preset"
            assert error["code"] == "preset_not_allowed"
        assert route.call_count == 0
        r = await client.post(
            "/v1/presets/qa/generate", json={"inputs": {"question": "Why?"}}, headers=bearer(secret)
        )
        assert r.status_code == 200, r.text
        # Plain generation is not a preset: a preset-restricted key may still use it.
        r = await client.post("/v1/generate", json={"prompt": "Hi"}, headers=bearer(secret))
        assert r.status_code == 200, r.text


async def test_a_conversation_is_seen_only_by_the_key_that_started_it(upstream: respx.MockRouter) -> None:
    route = upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        _, alice = await create_key(client, name="alice")
        _, bob = await create_key(client, name="bob")
        r = await client.post("/v1/conversations", json={"system": "Be brief."}, headers=bearer(alice))
        assert r.status_code == 200, r.text
        conv = r.json()["id"]
        r = await client.post(
            f"/v1/conversations/{conv}/messages", json={"content": "Hi"}, headers=bearer(alice)
        )
        assert r.status_code == 200, r.text
        calls = route.call_count

        # To another key it does not exist: same 404 as an unknown id, so ids leak nothing.
        for method, path, body in [
            ("GET", f"/v1/conversations/{conv}", None),
            ("POST", f"/v1/conversations/{conv}/messages", {"content": "Show me alice's chat"}),
            ("POST", f"/v1/conversations/{conv}/messages", {"content": "streamed", "stream": True}),
            ("DELETE", f"/v1/conversations/{conv}", None),
        ]:
            r = await client.request(method, path, json=body, headers=bearer(bob))
            assert _assert_openai_error(r, 404, "not_found_error")["code"] == "conversation_not_found"
        r = await client.get("/v1/conversations", headers=bearer(bob))
        assert r.json()["data"] == []
        r = await client.get("/v1/conversations", params={"after": conv}, headers=bearer(bob))
        assert r.status_code == 404
        assert route.call_count == calls  # nothing reached the model on bob's behalf

        # Its owner still has all of it.
        r = await client.get(f"/v1/conversations/{conv}", headers=bearer(alice))
        assert [m["role"] for m in r.json()["messages"]] == ["user", "assistant"]
        r = await client.get("/v1/conversations", headers=bearer(alice))
        assert [c["id"] for c in r.json()["data"]] == [conv]
        r = await client.delete(f"/v1/conversations/{conv}", headers=bearer(alice))
        assert r.status_code in (200, 204), r.text


# --- the admin API ---------------------------------------------------------------------------------


async def test_the_admin_api_needs_the_admin_token() -> None:
    async with running(keys_app()) as client:
        _, secret = await create_key(client)
        for headers in ({}, bearer("wrong-admin-token"), bearer(secret)):
            r = await client.get("/admin/keys", headers=headers)
            _assert_openai_error(r, 401, "authentication_error")
    async with running(keys_app(auth_mode="none", admin_token=None)) as client:
        r = await client.get("/admin/keys", headers=ADMIN)
        assert _assert_openai_error(r, 403, "permission_error")["code"] == "admin_disabled"


async def test_keys_are_listed_updated_and_revoked_without_their_secrets(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        key_id, secret = await create_key(
            client, name="web", limits={"requests_per_minute": 1}, allowed_presets=["qa"]
        )
        other_id, other = await create_key(client, name="batch")
        listed = (await client.get("/admin/keys", headers=ADMIN)).json()
        assert [k["id"] for k in listed["data"]] == [other_id, key_id]
        assert secret not in str(listed)
        assert other not in str(listed)
        assert all("key" not in k for k in listed["data"])
        assert listed["data"][1]["hint"] == secret[:7]
        assert listed["data"][1]["limits"]["requests_per_minute"] == 1
        assert listed["data"][1]["allowed_presets"] == ["qa"]

        assert (
            await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        ).is_success
        r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        assert r.status_code == 429
        # Raising the limit applies at once (the cached key is dropped on every replica).
        r = await client.patch(
            f"/admin/keys/{key_id}", json={"limits": {"requests_per_minute": 5}}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        assert r.json()["limits"]["requests_per_minute"] == 5
        assert r.json()["allowed_presets"] == ["qa"]  # untouched fields stay
        r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        # A limit set to null is removed.
        r = await client.patch(
            f"/admin/keys/{key_id}", json={"limits": {"requests_per_minute": None}}, headers=ADMIN
        )
        assert r.json()["limits"]["requests_per_minute"] is None

        await client.delete(f"/admin/keys/{other_id}", headers=ADMIN)
        active = (await client.get("/admin/keys?include_revoked=false", headers=ADMIN)).json()
        assert [k["id"] for k in active["data"]] == [key_id]
        assert (await client.get(f"/admin/keys/{other_id}", headers=ADMIN)).json()["status"] == "revoked"
        r = await client.get("/admin/keys/key_nope", headers=ADMIN)
        assert _assert_openai_error(r, 404, "not_found_error")["code"] == "key_not_found"


async def test_keys_never_reach_logs_or_stored_records(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    caplog.set_level(logging.DEBUG)
    app = keys_app(database_url=database_url, usage_flush_seconds=0, log_level="DEBUG")
    async with running(app) as client:
        key_id, secret = await create_key(client, limits={"requests_per_minute": 2})
        for _ in range(3):  # the third one is refused
            await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        await client.post("/v1/chat/completions", json=chat_body(stream=True), headers=bearer(secret))
        await client.get("/v1/usage", headers=bearer(secret))
        await client.delete(f"/admin/keys/{key_id}", headers=ADMIN)
        await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret[:-1] + "x"))
        stored: list[str] = []
        async with app.state.genserve.db.session() as session:
            for table in Base.metadata.sorted_tables:
                rows = (await session.execute(text(f"SELECT * FROM {table.name}"))).all()
                stored.extend(repr(row) for row in rows)
    assert any(key_id in row for row in stored)  # the records are there...
    assert not any(secret in row or secret[3:] in row for row in stored)  # ...the secret is not
    formatter = JsonFormatter()
    logged = "\n".join(f"{formatter.format(r)} {r.__dict__!r}" for r in caplog.records)
    assert key_id in logged  # the key's creation and revocation are logged, by id
    access = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "genserve.access"]
    assert {line.get("key_id") for line in access if line["route"] == "/v1/chat/completions"} == {
        key_id,
        None,
    }
    assert secret not in logged
    assert secret[3:] not in logged
    assert ADMIN["authorization"].split()[1] not in logged


async def test_refusals_are_counted_in_metrics_by_limit(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        _, secret = await create_key(client, limits={"requests_per_minute": 2, "tokens_per_minute": 100})
        statuses = [
            (
                await client.post(
                    "/v1/chat/completions", json=chat_body(max_tokens=n), headers=bearer(secret)
                )
            ).status_code
            for n in (10, 500, 10, 10)
        ]
        assert statuses == [200, 429, 200, 429]
        scraped = (await client.get("/metrics")).text
    assert 'genserve_rate_limited_total{limit="requests_per_minute"} 1.0' in scraped
    assert 'genserve_rate_limited_total{limit="tokens_per_minute"} 1.0' in scraped
