"""Usage and cost: per key, per model, per day, matching what clients were told, streams included."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
import respx

from tests.access_helpers import (
    ADMIN,
    PRICED_MODELS,
    bearer,
    chat_body,
    completion,
    create_key,
    keys_app,
    running,
    stream_response,
)
from tests.conftest import openai_settings


def _stream_usage(body: str) -> dict[str, int]:
    """The usage a stream reported: the chat `include_usage` chunk or the generate final event."""
    found = None
    for line in body.splitlines():
        if line.startswith("data: {"):
            event = json.loads(line.removeprefix("data: "))
            if event.get("usage"):
                found = event["usage"]
    assert found is not None, body
    return found


async def test_usage_matches_what_clients_were_told(upstream: respx.MockRouter, database_url: str) -> None:
    """Plain and streamed requests on two endpoints and two models, by two keys: the per-key
    reports add up to exactly the `usage` the responses carried, and cost follows the prices."""
    replies = iter(
        [
            httpx.Response(200, json=completion(prompt_tokens=12, completion_tokens=7)),
            stream_response(["a", "b", "c"], prompt_tokens=9, completion_tokens=3),
            httpx.Response(200, json=completion(prompt_tokens=100, completion_tokens=50)),
            stream_response(["x", "y"], prompt_tokens=20, completion_tokens=2),
            httpx.Response(200, json=completion(prompt_tokens=1000, completion_tokens=1000)),
        ]
    )
    upstream.post("/chat/completions").side_effect = lambda _: next(replies)
    app = keys_app(database_url=database_url, usage_flush_seconds=30)  # reads flush first
    async with running(app) as client:
        key_a, a = await create_key(client, name="a")
        key_b, b = await create_key(client, name="b")
        told: dict[tuple[str, str], list[dict[str, int]]] = {}

        async def call(key: str, path: str, body: dict[str, Any], model: str) -> None:
            r = await client.post(path, json=body, headers=bearer(key))
            assert r.status_code == 200, r.text
            usage = _stream_usage(r.text) if body.get("stream") else r.json()["usage"]
            told.setdefault((key, model), []).append(usage)

        await call(a, "/v1/chat/completions", chat_body(), "gpt-4o-mini")
        await call(
            a,
            "/v1/chat/completions",
            chat_body(stream=True, stream_options={"include_usage": True}),
            "gpt-4o-mini",
        )
        await call(a, "/v1/generate", {"prompt": "Hi", "model": "gpt-4o"}, "gpt-4o")
        await call(a, "/v1/generate", {"prompt": "Hi", "stream": True}, "gpt-4o-mini")
        await call(b, "/v1/chat/completions", chat_body(model="gpt-4o"), "gpt-4o")

        mine = (await client.get("/v1/usage", headers=bearer(a))).json()
        by_model = {row["model"]: row for row in mine["data"]}
        assert set(by_model) == {"gpt-4o-mini", "gpt-4o"}
        for model, row in by_model.items():
            usages = told[(a, model)]
            assert row["requests"] == len(usages)
            assert row["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
            assert row["completion_tokens"] == sum(u["completion_tokens"] for u in usages)
            assert row["total_tokens"] == sum(u["total_tokens"] for u in usages)
            assert row["key_id"] == key_a
            assert row["date"] == dt.datetime.now(dt.UTC).date().isoformat()
        assert by_model["gpt-4o-mini"]["prompt_tokens"] == 12 + 9 + 20
        # $0.15 / $0.60 per million on the mini model; $2.50 / $10 on gpt-4o.
        assert by_model["gpt-4o-mini"]["cost"] == pytest.approx((41 * 0.15 + 12 * 0.60) / 1e6)
        assert by_model["gpt-4o"]["cost"] == pytest.approx((100 * 2.5 + 50 * 10) / 1e6)
        assert mine["totals"]["requests"] == 4
        assert mine["totals"]["cost"] == pytest.approx(sum(r["cost"] for r in mine["data"]))

        # The admin sees everyone, and filters by key, model and date.
        everyone = (await client.get("/admin/usage", headers=ADMIN)).json()
        assert everyone["totals"]["requests"] == 5
        assert everyone["totals"]["cost"] == pytest.approx(
            mine["totals"]["cost"] + (1000 * 2.5 + 1000 * 10) / 1e6
        )
        only_b = (await client.get(f"/admin/usage?key_id={key_b}", headers=ADMIN)).json()
        assert [(r["key_id"], r["model"], r["total_tokens"]) for r in only_b["data"]] == [
            (key_b, "gpt-4o", 2000)
        ]
        gpt4o = (await client.get("/admin/usage?model=gpt-4o", headers=ADMIN)).json()
        assert {r["key_id"] for r in gpt4o["data"]} == {key_a, key_b}
        today = dt.datetime.now(dt.UTC).date()
        tomorrow = today + dt.timedelta(days=1)
        later = (await client.get(f"/admin/usage?start={tomorrow}", headers=ADMIN)).json()
        assert later["data"] == []
        assert later["totals"]["requests"] == 0
        window = (await client.get(f"/admin/usage?start={today}&end={today}", headers=ADMIN)).json()
        assert window["totals"]["requests"] == 5
        # A client sees only its own key, whatever it asks for.
        assert (await client.get(f"/v1/usage?key_id={key_b}", headers=bearer(a))).json()["totals"][
            "requests"
        ] == 4
        assert (await client.get("/v1/usage", headers=bearer(b))).json()["totals"]["requests"] == 1


async def test_usage_is_written_at_shutdown_and_adds_up_across_instances(
    upstream: respx.MockRouter, database_url: str
) -> None:
    """Counts buffered in memory survive a restart, and upserts add to rows other instances wrote."""
    upstream.post("/chat/completions").respond(json=completion(prompt_tokens=10, completion_tokens=5))
    app = keys_app(database_url=database_url, usage_flush_seconds=60)
    async with running(app) as client:
        _, secret = await create_key(client)
        for _ in range(3):
            assert (
                await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
            ).is_success
    app = keys_app(database_url=database_url, usage_flush_seconds=60)
    async with running(app) as client:
        assert (
            await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        ).is_success
        totals = (await client.get("/v1/usage", headers=bearer(secret))).json()["totals"]
    assert totals == {
        "requests": 4,
        "prompt_tokens": 40,
        "completion_tokens": 20,
        "total_tokens": 60,
        "cost": pytest.approx((40 * 0.15 + 20 * 0.60) / 1e6),
    }


async def test_without_keys_usage_is_counted_as_anonymous(upstream: respx.MockRouter) -> None:
    from app.main import create_app

    upstream.post("/chat/completions").respond(json=completion(prompt_tokens=3, completion_tokens=4))
    async with running(create_app(openai_settings())) as client:
        assert (await client.post("/v1/chat/completions", json=chat_body())).is_success
        report = (await client.get("/v1/usage")).json()
    assert [(r["key_id"], r["total_tokens"]) for r in report["data"]] == [("anonymous", 7)]


async def test_a_fallback_is_billed_as_the_model_that_served_and_a_cache_hit_costs_nothing(
    upstream: respx.MockRouter,
) -> None:
    models = {
        "gpt-4o": {**PRICED_MODELS["gpt-4o"], "fallbacks": ["gpt-4o-mini"]},
        "gpt-4o-mini": PRICED_MODELS["gpt-4o-mini"],
    }
    upstream.post("/chat/completions", json__model="gpt-4o").respond(500, json={"error": {"message": "down"}})
    upstream.post("/chat/completions", json__model="gpt-4o-mini").respond(
        json=completion(prompt_tokens=100, completion_tokens=100)
    )
    app = keys_app(models=models, upstream_max_retries=0, cache_enabled=True)
    async with running(app) as client:
        _, secret = await create_key(client)
        body = chat_body(model="gpt-4o", temperature=0)
        first = await client.post("/v1/chat/completions", json=body, headers=bearer(secret))
        assert first.status_code == 200, first.text
        assert first.json()["model"] == "gpt-4o-mini"
        again = await client.post(
            "/v1/chat/completions", json=chat_body(temperature=0), headers=bearer(secret)
        )
        again = await client.post(
            "/v1/chat/completions", json=chat_body(temperature=0), headers=bearer(secret)
        )
        assert again.headers["x-cache"] == "hit"
        report = (await client.get("/v1/usage", headers=bearer(secret))).json()
    (row,) = report["data"]
    assert row["model"] == "gpt-4o-mini"
    assert row["requests"] == 3
    assert row["total_tokens"] == 600  # what the three answers said they used
    assert row["cost"] == pytest.approx(2 * (100 * 0.15 + 100 * 0.60) / 1e6)  # the hit paid nothing
