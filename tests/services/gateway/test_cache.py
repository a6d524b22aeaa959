"""The response cache: deterministic requests answered again without the upstream, in process
and through the real Redis shared by two instances."""

from __future__ import annotations

from typing import Any

import pytest
import respx
from redis.asyncio import Redis

from tests.clock import ManualClock
from tests.conftest import REDIS, openai_settings
from tests.upstream_faults import Service, error, ok, sse_events, streamed

CHAT = "/v1/chat/completions"


def settings(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "cache_enabled": True,
        "models": {
            "primary": {"provider": "openai", "upstream_model": "gpt-4o", "fallbacks": ["backup"]},
            "backup": {"provider": "openai", "upstream_model": "gpt-4o-mini"},
        },
        "upstream_max_retries": 0,
    }
    values.update(overrides)
    return openai_settings(**values)


def chat(content: str = "What is the capital of France?", **more: Any) -> dict[str, Any]:
    return {"model": "primary", "messages": [{"role": "user", "content": content}], "temperature": 0, **more}


async def test_a_repeated_temperature_0_request_is_answered_from_the_cache(
    upstream: respx.MockRouter,
) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok("Paris."))
    async with Service(settings()) as client:
        first = await client.post(CHAT, json=chat())
        second = await client.post(CHAT, json=chat())
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["usage"] == first.json()["usage"]
    assert second.json()["metadata"]["cache"] == "hit"
    assert calls.call_count == 1


async def test_a_fixed_seed_is_cached_and_random_sampling_is_not(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok())
    async with Service(settings()) as client:
        random_1 = await client.post(CHAT, json=chat(temperature=0.8))
        random_2 = await client.post(CHAT, json=chat(temperature=0.8))
        assert "x-cache" not in random_1.headers
        assert "x-cache" not in random_2.headers
        assert calls.call_count == 2
        await client.post(CHAT, json=chat(temperature=0.8, seed=7))
        seeded = await client.post(CHAT, json=chat(temperature=0.8, seed=7))
        assert seeded.headers["x-cache"] == "hit"
        assert seeded.json()["sampling"]["seed"] == 7
        assert calls.call_count == 3


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "What is the capital of Spain?"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        {"model": "backup"},
        {"max_tokens": 7},
        {"top_p": 0.5},
        {"n": 2},
        {"stop": ["."]},
        {"seed": 3},
        {"presence_penalty": 0.5},
        {"frequency_penalty": 0.5},
        {"response_format": {"type": "json_object"}},
        {"logit_bias": {"50256": -100}},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_anything_that_changes_the_answer_changes_the_key(
    upstream: respx.MockRouter, change: dict[str, Any]
) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=lambda request: ok())
    async with Service(settings()) as client:
        await client.post(CHAT, json=chat())
        r = await client.post(CHAT, json={**chat(), **change})
    assert r.status_code == 200, r.text
    assert r.headers["x-cache"] == "miss"
    assert calls.call_count == 2


async def test_who_asks_is_no_part_of_the_key(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok())
    async with Service(settings()) as client:
        await client.post(CHAT, json=chat(user="alice"), headers={"authorization": "Bearer sk-alice-1111"})
        r = await client.post(CHAT, json=chat(user="bob"), headers={"authorization": "Bearer sk-bob-2222"})
    assert r.headers["x-cache"] == "hit"
    assert calls.call_count == 1


async def test_no_cache_skips_the_lookup_and_refreshes_the_entry(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=[ok("Old."), ok("New.")])
    async with Service(settings()) as client:
        await client.post(CHAT, json=chat())
        fresh = await client.post(CHAT, json=chat(), headers={"cache-control": "no-cache"})
        again = await client.post(CHAT, json=chat())
    assert fresh.headers["x-cache"] == "bypass"
    assert fresh.json()["choices"][0]["message"]["content"] == "New."
    assert again.headers["x-cache"] == "hit"
    assert again.json()["choices"][0]["message"]["content"] == "New."
    assert calls.call_count == 2


async def test_no_store_neither_reads_nor_keeps(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok())
    async with Service(settings()) as client:
        first = await client.post(CHAT, json=chat(), headers={"cache-control": "no-store"})
        second = await client.post(CHAT, json=chat())
    assert first.headers["x-cache"] == "bypass"
    assert second.headers["x-cache"] == "miss"
    assert calls.call_count == 2


async def test_the_setting_turns_the_cache_off(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok())
    async with Service(settings(cache_enabled=False)) as client:
        await client.post(CHAT, json=chat())
        r = await client.post(CHAT, json=chat())
    assert "x-cache" not in r.headers
    assert calls.call_count == 2


async def test_a_cached_answer_is_replayed_as_a_stream(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok("Paris is the capital."))
    async with Service(settings()) as client:
        await client.post(CHAT, json=chat())
        r = await client.post(CHAT, json=chat(stream=True, stream_options={"include_usage": True}))
    assert r.headers["x-cache"] == "hit"
    events = sse_events(r.text)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
    assert text == "Paris is the capital."
    assert events[-2]["usage"]["total_tokens"] == 8
    assert [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]][-1] == "stop"
    assert calls.call_count == 1


async def test_a_finished_stream_fills_the_cache_for_plain_requests(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=streamed("Par", "is."))
    async with Service(settings()) as client:
        streamed_r = await client.post(CHAT, json=chat(stream=True))
        assert streamed_r.headers["x-cache"] == "miss"
        r = await client.post(CHAT, json=chat())
    assert r.headers["x-cache"] == "hit"
    assert r.json()["choices"][0]["message"]["content"] == "Paris."
    assert calls.call_count == 1


async def test_answers_from_a_fallback_are_not_cached(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions", json__model="gpt-4o").mock(return_value=error(500))
    backup = upstream.post("/chat/completions", json__model="gpt-4o-mini").mock(return_value=ok())
    async with Service(settings()) as client:
        await client.post(CHAT, json=chat())
        r = await client.post(CHAT, json=chat())
    assert r.json()["model"] == "backup"
    assert r.headers["x-cache"] == "miss"
    assert backup.call_count == 2


async def test_entries_expire_after_their_ttl(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok())
    clock = ManualClock()
    async with Service(settings(cache_ttl=1), clocks=clock.clocks) as client:
        await client.post(CHAT, json=chat())
        clock.advance(0.9)
        assert (await client.post(CHAT, json=chat())).headers["x-cache"] == "hit"
        clock.advance(0.2)
        assert (await client.post(CHAT, json=chat())).headers["x-cache"] == "miss"
    assert calls.call_count == 2


async def test_the_least_recently_used_entry_goes_first(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok())
    async with Service(settings(cache_max_entries=2)) as client:
        for question in ("a", "b", "a", "c"):  # "b" is now the least recently used
            await client.post(CHAT, json=chat(question))
        assert calls.call_count == 3
        assert (await client.post(CHAT, json=chat("a"))).headers["x-cache"] == "hit"
        assert (await client.post(CHAT, json=chat("b"))).headers["x-cache"] == "miss"


async def test_two_instances_share_answers_through_redis(
    upstream: respx.MockRouter, redis: Redis, redis_prefix: str
) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok("Paris."))
    config = settings(redis_url=REDIS, redis_prefix=redis_prefix)
    async with Service(config) as one, Service(config) as two:
        first = await one.post(CHAT, json=chat())
        second = await two.post(CHAT, json=chat())
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.json()["choices"][0]["message"]["content"] == "Paris."
    assert calls.call_count == 1
    keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}*")]
    assert len(keys) == 1
    assert 0 < await redis.ttl(keys[0]) <= 3600
    stored = await redis.get(keys[0])
    assert b"capital of France" not in stored
    assert b"capital of France" not in keys[0]
    assert b"sk-test-secret" not in stored


async def test_redis_entries_expire(upstream: respx.MockRouter, redis: Redis, redis_prefix: str) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok())
    async with Service(settings(redis_url=REDIS, redis_prefix=redis_prefix, cache_ttl=1)) as client:
        await client.post(CHAT, json=chat())
        # Redis expires entries on its own clock: the entry carries the TTL, and once Redis
        # has dropped it (done here at once) the next request is answered afresh.
        [key] = [key async for key in redis.scan_iter(match=f"{redis_prefix}*")]
        assert 0 < await redis.pttl(key) <= 1000
        await redis.delete(key)
        r = await client.post(CHAT, json=chat())
    assert r.headers["x-cache"] == "miss"
    assert calls.call_count == 2


async def test_an_unreachable_redis_does_not_fail_requests(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(return_value=ok())
    service = Service(settings(redis_url="redis://127.0.0.1:1/0"))
    async with service as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 200
    assert r.headers["x-cache"] == "miss"
    assert calls.call_count == 1
    assert service.state.safeguards.cache.errors >= 1
