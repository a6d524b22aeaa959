"""Feedback tunes sampling: Thompson sampling over each preset's variants, explicit values win,
the state lives in the database (restarts, replicas), and it converges on what users like."""

from __future__ import annotations

import httpx
import pytest
import respx
from sqlalchemy import text

from app.main import create_app
from bench.tuning_convergence import PREFERRED, simulate
from tests.clock import ManualClock
from tests.conftest import openai_settings
from tests.preset_helpers import FakeUpstream, serve


async def test_explicit_sampling_values_are_never_tuned_away(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    fake = FakeUpstream().install(upstream)
    r = await openai_client.post("/v1/presets/copywriting/generate", json={"inputs": {"topic": "tea"}})
    sampling = r.json()["sampling"]
    assert sampling["tuned"] is True
    assert sampling["variant"] in {"focused", "lively", "bold"}
    expected_temperature = {"focused": 0.6, "lively": 0.9, "bold": 1.2}[sampling["variant"]]
    assert sampling["temperature"] == expected_temperature
    assert fake.bodies[-1]["temperature"] == expected_temperature
    for explicit in ({"temperature": 0.15}, {"top_p": 0.5}):
        for _ in range(5):
            r = await openai_client.post(
                "/v1/presets/copywriting/generate", json={"inputs": {"topic": "tea"}, **explicit}
            )
            sampling = r.json()["sampling"]
            assert (sampling["tuned"], sampling["variant"]) == (False, None)
            for field, value in explicit.items():
                assert sampling[field] == value
                assert fake.bodies[-1][field] == value
            assert sampling["max_tokens"] == 400  # the preset's own default still applies
    # A field no variant varies leaves tuning on (qa's variants vary temperature only).
    r = await openai_client.post("/v1/presets/qa/generate", json={"inputs": {"question": "?"}, "top_p": 0.5})
    assert r.json()["sampling"]["tuned"] is True
    assert r.json()["sampling"]["top_p"] == 0.5


async def test_feedback_moves_the_posterior_and_the_report_counts_choices(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    FakeUpstream().install(upstream)
    answers = [
        (await openai_client.post("/v1/presets/qa/generate", json={"inputs": {"question": "?"}})).json()
        for _ in range(6)
    ]
    first = answers[0]["sampling"]["variant"]
    await openai_client.post("/v1/feedback", json={"generation_id": answers[0]["id"], "rating": "up"})
    await openai_client.post("/v1/feedback", json={"generation_id": answers[1]["id"], "rating": 3})
    r = await openai_client.get("/v1/presets/qa/tuning")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["tuned_fields"] == ["temperature"]
    assert report["chosen_total"] == 6
    variants = {v["name"]: v for v in report["variants"]}
    assert set(variants) == {"exact", "careful", "loose"}
    assert sum(v["chosen"] for v in variants.values()) == 6
    assert sum(v["ratings"] for v in variants.values()) == 2
    assert sum(v["alpha"] for v in variants.values()) == 3 + 1.5
    assert sum(v["beta"] for v in variants.values()) == 3 + 0.5
    assert variants[first]["alpha"] >= 2
    for v in variants.values():
        assert v["mean"] == round(v["alpha"] / (v["alpha"] + v["beta"]), 4)
    untuned = (await openai_client.get("/v1/presets/summarize/tuning")).json()
    assert (untuned["enabled"], untuned["variants"]) == (False, [])
    assert (await openai_client.get("/v1/presets/nope/tuning")).status_code == 404


async def test_tuning_state_is_shared_by_replicas_and_survives_restarts(
    database_url: str, upstream: respx.MockRouter
) -> None:
    FakeUpstream().install(upstream)
    one = create_app(openai_settings(database_url=database_url))
    two = create_app(openai_settings(database_url=database_url, tuning_refresh_seconds=0))
    async with serve(one) as a, serve(two) as b:
        answer = (await a.post("/v1/presets/qa/generate", json={"inputs": {"question": "?"}})).json()
        variant = answer["sampling"]["variant"]
        # Rated through the other replica, seen by both.
        r = await b.post("/v1/feedback", json={"generation_id": answer["id"], "rating": 5})
        assert r.status_code == 200, r.text
        for client in (a, b):
            report = {v["name"]: v for v in (await client.get("/v1/presets/qa/tuning")).json()["variants"]}
            assert (report[variant]["alpha"], report[variant]["chosen"]) == (2.0, 1)
    async with serve(create_app(openai_settings(database_url=database_url))) as c:
        report = {v["name"]: v for v in (await c.get("/v1/presets/qa/tuning")).json()["variants"]}
        assert (report[variant]["alpha"], report[variant]["beta"], report[variant]["ratings"]) == (
            2.0,
            1.0,
            1,
        )


async def test_tuning_converges_on_the_variant_users_prefer(upstream: respx.MockRouter) -> None:
    """Users like 'lively' 80% of the time and the others 40%: after a few hundred rounds
    through the HTTP API, Thompson sampling picks 'lively' for most requests."""
    FakeUpstream().install(upstream)
    clock = ManualClock()
    # The tuning state refreshes every 2 s of the injected clock: every 10 rounds, on any machine.
    every_tenth = lambda i: clock.advance(2.0) if i % 10 == 0 else None  # noqa: E731
    async with serve(create_app(openai_settings(tuning_refresh_seconds=2.0), clocks=clock.clocks)) as client:
        chosen = await simulate(client, rounds=300, seed=1, on_round=every_tenth)
        report = (await client.get("/v1/presets/copywriting/tuning")).json()
    late = chosen[-100:]
    assert late.count(PREFERRED) > 60, {v: late.count(v) for v in set(late)}
    assert chosen[:100].count(PREFERRED) < late.count(PREFERRED)
    variants = {v["name"]: v for v in report["variants"]}
    assert max(variants, key=lambda name: variants[name]["mean"]) == PREFERRED
    assert variants[PREFERRED]["recent_share"] > 0.6
    assert report["chosen_total"] == 300


async def test_tuning_falls_back_to_the_priors_when_the_database_cannot_answer(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    FakeUpstream().install(upstream)
    app = create_app(openai_settings())
    async with serve(app) as client:
        async with app.state.genserve.db.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE feedback RENAME TO feedback_away"))
        r = await client.post("/v1/presets/qa/generate", json={"inputs": {"question": "Still there?"}})
        assert r.status_code == 200, r.text
        assert r.json()["sampling"]["tuned"] is True
        assert "reading the tuning feedback of preset 'qa' failed" in caplog.text
