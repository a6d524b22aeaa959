"""Rate limits and quotas per key: exact across replicas, reserved up front, settled with real usage."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

import httpx
import pytest
import respx

from app.services.gateway.limits import duration, periods
from tests.access_helpers import (
    ADMIN,
    bearer,
    chat_body,
    completion,
    create_key,
    keys_app,
    running,
    slow_stream_response,
    stream_response,
    walk_away,
)
from tests.clock import ManualClock
from tests.waiting import eventually


def _remaining_tokens(r: httpx.Response) -> int:
    return int(r.headers["x-ratelimit-remaining-tokens"])


async def test_a_burst_across_two_replicas_admits_exactly_the_limit(
    upstream: respx.MockRouter, redis_prefix: str, tmp_path: object
) -> None:
    """30 concurrent requests, 15 on each of two instances sharing Redis, limit 10 per minute."""
    route = upstream.post("/chat/completions").respond(json=completion())
    db = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    a = keys_app(redis_prefix=redis_prefix, database_url=db)
    b = keys_app(redis_prefix=redis_prefix, database_url=db)
    async with running(a) as one, running(b) as two:
        _, secret = await create_key(one, limits={"requests_per_minute": 10})
        replies = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
                for client in (one, two) * 15
            )
        )
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 20, statuses
    assert route.call_count == 10
    for r in replies:
        assert r.headers["x-ratelimit-limit-requests"] == "10"
        if r.status_code == 429:
            error = r.json()["error"]
            assert error["type"] == "rate_limit_error"
            assert error["code"] == "rate_limit_exceeded"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in replies if r.is_success)
    assert remaining == list(range(10))


async def test_a_burst_on_a_single_instance_without_redis(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        _, secret = await create_key(client, limits={"requests_per_minute": 10})
        replies = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
                for _ in range(30)
            )
        )
    assert [r.status_code for r in replies].count(200) == 10


async def test_limits_are_per_key(upstream: respx.MockRouter, redis_prefix: str) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app(redis_prefix=redis_prefix)) as client:
        _, first = await create_key(client, limits={"requests_per_minute": 1})
        _, second = await create_key(client, limits={"requests_per_minute": 1})
        assert (await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(first))).is_success
        assert (
            await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(first))
        ).status_code == 429
        assert (
            await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(second))
        ).is_success


@pytest.mark.parametrize("use_redis", [True, False], ids=["redis", "in-process"])
async def test_tokens_per_minute_reserve_up_front_and_settle_with_real_usage(
    upstream: respx.MockRouter, redis_prefix: str, use_redis: bool
) -> None:
    """A request reserves prompt + max_tokens (about 53) but uses 15 (the upstream's usage).
    Settling gives the difference back: a second one fits, which it would not had the first
    kept its reservation; a larger third one does not."""
    upstream.post("/chat/completions").respond(json=completion(prompt_tokens=10, completion_tokens=5))
    app = keys_app(redis_prefix=redis_prefix if use_redis else None)
    async with running(app) as client:
        _, secret = await create_key(client, limits={"tokens_per_minute": 100})
        body = chat_body(max_tokens=45)
        first = await client.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert first.status_code == 200, first.text
        reserved = 100 - _remaining_tokens(first)
        assert 45 < reserved < 60  # prompt estimate + max_tokens, reported before the answer
        second = await client.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert second.status_code == 200, second.text
        # The first request settled at 15 tokens; the second holds its reservation.
        assert 100 - 15 - reserved <= _remaining_tokens(second) <= 100 - 15 - reserved + 3
        third = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=80), headers=bearer(secret)
        )
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "rate_limit_exceeded"
        assert "tokens per minute" in third.json()["error"]["message"]
        wait = int(third.headers["retry-after"])
        assert wait >= 1
        assert int(third.headers["retry-after-ms"]) <= wait * 1000
        assert third.headers["x-ratelimit-limit-tokens"] == "100"
        # A request that can never fit is told so, not told to wait.
        too_big = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=500), headers=bearer(secret)
        )
        assert too_big.status_code == 429
        assert too_big.json()["error"]["code"] == "request_too_large"
        assert "retry-after" not in too_big.headers


@pytest.mark.parametrize("budget", ["tokens_per_day", "tokens_per_month"])
async def test_token_budgets(upstream: respx.MockRouter, redis_prefix: str, budget: str) -> None:
    """Each request uses 30 tokens; a budget of 100 admits three and refuses the fourth until the
    UTC day (or month) ends."""
    upstream.post("/chat/completions").respond(json=completion(prompt_tokens=10, completion_tokens=20))
    async with running(keys_app(redis_prefix=redis_prefix)) as client:
        _, secret = await create_key(client, limits={budget: 100})
        body = chat_body(max_tokens=20)  # reserves about 28
        for _ in range(3):
            r = await client.post("/v1/chat/completions", json=body, headers=bearer(secret))
            assert r.status_code == 200, r.text
        r = await client.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "insufficient_quota"
        _, _, day_left, month_left = periods(datetime.now(UTC))
        expected = day_left if budget == "tokens_per_day" else month_left
        assert abs(int(r.headers["retry-after"]) - expected) <= 5
        # The budget counts real usage: the three requests used 90 of it, not their reservations.
        usage = (await client.get("/v1/usage", headers=bearer(secret))).json()
        assert usage["totals"]["total_tokens"] == 90
        # Raising the budget lets the key go on at once.
        key_id = (await client.get("/admin/keys", headers=ADMIN)).json()["data"][0]["id"]
        await client.patch(f"/admin/keys/{key_id}", json={"limits": {budget: 200}}, headers=ADMIN)
        assert (await client.post("/v1/chat/completions", json=body, headers=bearer(secret))).is_success


async def test_a_daily_budget_on_redis_starts_again_when_the_injected_clock_passes_midnight(
    upstream: respx.MockRouter, redis_prefix: str
) -> None:
    """The shared limiter decides which UTC day a budget counts in by the app's wall clock, not
    the machine's: moved past midnight, a spent key may spend again."""
    upstream.post("/chat/completions").respond(json=completion(prompt_tokens=10, completion_tokens=20))
    clock = ManualClock()
    async with running(keys_app(redis_prefix=redis_prefix, clocks=clock.clocks)) as client:
        _, secret = await create_key(client, limits={"tokens_per_day": 60})
        body = chat_body(max_tokens=20)
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=body, headers=bearer(secret))).is_success
        r = await client.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert r.json()["error"]["code"] == "insufficient_quota"
        _, _, day_left, _ = periods(datetime.fromtimestamp(clock.clocks.wall(), UTC))
        clock.advance(day_left + 1)
        assert (await client.post("/v1/chat/completions", json=body, headers=bearer(secret))).is_success


async def test_a_stream_is_settled_with_its_real_usage(upstream: respx.MockRouter, redis_prefix: str) -> None:
    route = upstream.post("/chat/completions")
    route.side_effect = [
        stream_response(["Hel", "lo", "!"], prompt_tokens=10, completion_tokens=3),
        httpx.Response(200, json=completion(prompt_tokens=10, completion_tokens=5)),
    ]
    async with running(keys_app(redis_prefix=redis_prefix)) as client:
        _, secret = await create_key(client, limits={"tokens_per_minute": 1000})
        r = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=200, stream=True), headers=bearer(secret)
        )
        assert r.status_code == 200
        assert "Hel" in r.text
        assert r.headers["x-ratelimit-limit-tokens"] == "1000"
        streamed_reservation = 1000 - _remaining_tokens(r)
        assert streamed_reservation > 200
        r = await client.post("/v1/chat/completions", json=chat_body(max_tokens=200), headers=bearer(secret))
        second_reservation = 1000 - 13 - _remaining_tokens(r)
        # The stream now counts its 13 tokens: neither its 200+ reservation, nor nothing.
        assert abs(second_reservation - streamed_reservation) <= 3


async def test_a_cancelled_stream_is_still_billed(upstream: respx.MockRouter, redis_prefix: str) -> None:
    """The client walks away after a few chunks: the prompt and the text produced are billed."""
    upstream.post("/chat/completions").side_effect = [
        slow_stream_response(count=200, delay=0.005),
        httpx.Response(200, json=completion(prompt_tokens=10, completion_tokens=5)),
    ]
    app = keys_app(redis_prefix=redis_prefix, usage_flush_seconds=0)
    async with running(app) as client:
        _, secret = await create_key(client, limits={"tokens_per_minute": 1100})
        started = time.monotonic()
        got = await walk_away(
            app,
            "/v1/chat/completions",
            chat_body(max_tokens=1000, stream=True),
            bearer(secret),
            after_chunks=20,
        )
        assert 20 <= len(got) < 100  # cut short, long before the upstream's 200 chunks

        async def billed() -> bool:
            r = await client.get("/v1/usage", headers=bearer(secret))
            return bool(r.json()["totals"]["requests"])

        await eventually(billed)  # the abandoned stream is settled as it unwinds
        usage = (await client.get("/v1/usage", headers=bearer(secret))).json()
        totals = usage["totals"]
        assert totals["requests"] == 1
        assert totals["prompt_tokens"] > 0
        assert 15 <= totals["completion_tokens"] < 100
        # The limiter agrees: the bucket holds what was billed (less what has drained since),
        # neither the 1000-token reservation nor nothing.
        r = await client.post("/v1/chat/completions", json=chat_body(max_tokens=50), headers=bearer(secret))
        drained = (time.monotonic() - started) * 1100 / 60
        held = 1100 - _remaining_tokens(r) - (50 + totals["prompt_tokens"])
        assert totals["total_tokens"] - drained - 2 <= held <= totals["total_tokens"] + 1


async def test_a_request_abandoned_before_its_answer_bills_the_prompt(upstream: respx.MockRouter) -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=completion())

    upstream.post("/chat/completions").side_effect = slow
    app = keys_app(usage_flush_seconds=0)
    async with running(app) as client:
        _, secret = await create_key(client, limits={"tokens_per_minute": 10_000})
        await walk_away(
            app, "/v1/chat/completions", chat_body(max_tokens=500), bearer(secret), after_chunks=0
        )

        async def billed() -> bool:
            r = await client.get("/v1/usage", headers=bearer(secret))
            return bool(r.json()["totals"]["requests"])

        await eventually(billed)
        totals = (await client.get("/v1/usage", headers=bearer(secret))).json()["totals"]
        assert totals["requests"] == 1
        assert totals["prompt_tokens"] > 0
        assert totals["completion_tokens"] == 0


async def test_a_failed_request_releases_its_tokens(upstream: respx.MockRouter, redis_prefix: str) -> None:
    upstream.post("/chat/completions").side_effect = [
        httpx.Response(500, json={"error": {"message": "boom"}}),
        httpx.Response(200, json=completion(prompt_tokens=10, completion_tokens=5)),
    ]
    async with running(keys_app(redis_prefix=redis_prefix, usage_flush_seconds=0)) as client:
        _, secret = await create_key(client, limits={"tokens_per_minute": 1000, "requests_per_minute": 10})
        failed = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=400), headers=bearer(secret)
        )
        assert failed.status_code == 502
        ok = await client.post("/v1/chat/completions", json=chat_body(max_tokens=400), headers=bearer(secret))
        assert ok.status_code == 200
        reservation = 1000 - _remaining_tokens(ok)
        assert 400 < reservation < 420  # only this request's own reservation: the failure was released
        assert ok.headers["x-ratelimit-remaining-requests"] == "8"  # the failed request still counted
        totals = (await client.get("/v1/usage", headers=bearer(secret))).json()["totals"]
        assert totals["requests"] == 1


async def test_rate_limit_headers_on_every_generating_endpoint(
    upstream: respx.MockRouter, redis_prefix: str
) -> None:
    upstream.post("/chat/completions").side_effect = lambda _: stream_response(["a"], 5, 1)
    async with running(keys_app(redis_prefix=redis_prefix)) as client:
        _, secret = await create_key(client, limits={"requests_per_minute": 60, "tokens_per_minute": 6000})
        r = await client.post(
            "/v1/generate", json={"prompt": "Hi", "stream": True, "max_tokens": 10}, headers=bearer(secret)
        )
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "60"
        assert r.headers["x-ratelimit-remaining-requests"] == "59"
        assert r.headers["x-ratelimit-reset-requests"] == "1s"  # one request drains in a second
        assert r.headers["x-ratelimit-limit-tokens"] == "6000"
        assert int(r.headers["x-ratelimit-remaining-tokens"]) < 6000
        assert r.headers["x-ratelimit-reset-tokens"].endswith("ms")
    async with running(keys_app(redis_prefix=redis_prefix + "x")) as client:
        _, secret = await create_key(client)  # no limits, no limit headers
        upstream.post("/chat/completions").side_effect = None
        upstream.post("/chat/completions").respond(json=completion())
        r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        assert r.status_code == 200
        assert not any(h.startswith("x-ratelimit") for h in r.headers)


def test_reset_durations_read_like_openais() -> None:
    assert duration(0.02) == "20ms"
    assert duration(6) == "6s"
    assert duration(1.5) == "1.5s"
    assert duration(60) == "1m0s"
    assert duration(90.25) == "1m30.25s"
    day, month, day_left, month_left = periods(datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC))
    assert (day, month) == ("20261231", "202612")
    assert math.isclose(day_left, 30)
    assert math.isclose(month_left, 30)


async def test_a_job_refused_by_a_later_hook_gives_its_reservation_back(
    upstream: respx.MockRouter, redis_prefix: str
) -> None:
    """Hooks after the limiter (privacy, records, ...) may refuse a job in `on_start`; the tokens
    the limiter reserved for it are released, not lost for the rest of the minute."""
    from app.errors import InvalidRequest
    from app.services.generation.pipeline import Job, JobHook

    class Refuse(JobHook):
        async def on_start(self, job: Job) -> None:
            if job.request.sampling.max_tokens == 400:
                raise InvalidRequest("refused by a later hook")

    upstream.post("/chat/completions").respond(json=completion(prompt_tokens=10, completion_tokens=5))
    app = keys_app(redis_prefix=redis_prefix)
    async with running(app) as client:
        app.state.genserve.generation.hooks.append(Refuse())
        _, secret = await create_key(client, limits={"tokens_per_minute": 1000})
        refused = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=400), headers=bearer(secret)
        )
        assert refused.status_code == 400
        ok = await client.post("/v1/chat/completions", json=chat_body(max_tokens=100), headers=bearer(secret))
        assert ok.status_code == 200
        assert 100 < 1000 - _remaining_tokens(ok) < 120  # only its own reservation


async def test_limits_fail_closed_when_redis_is_down(upstream: respx.MockRouter, tmp_path: object) -> None:
    route = upstream.post("/chat/completions").respond(json=completion())
    db = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    async with running(keys_app(database_url=db)) as client:  # a key, made while all is well
        _, secret = await create_key(client, limits={"requests_per_minute": 10})
    app = keys_app(database_url=db, redis_url="redis://127.0.0.1:1/0", redis_prefix="genserve-test:down:")
    async with running(app) as client:
        r = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "service_unavailable"
        assert r.headers["retry-after"] == "1"
    assert route.call_count == 0
