"""The summarize preset's fan-out is bounded: the text has a maximum length, splitting runs off
the event loop, and a key's token limit is checked against the whole map-reduce before any part
is sent."""

from __future__ import annotations

import threading

import respx

from app.services.apps.summarize import reduce_to_fit
from tests.access_helpers import bearer, create_key, keys_app, running
from tests.conftest import openai_settings
from tests.preset_helpers import FakeUpstream, serve
from tests.services.apps.test_summarize import TINY, long_text, part_reply

SUMMARIZE = "/v1/presets/summarize/generate"


async def test_a_text_over_the_bound_is_refused_before_any_work(upstream: respx.MockRouter) -> None:
    fake = FakeUpstream("unused").install(upstream)
    from app.main import create_app

    app = create_app(openai_settings(models=TINY, summarize_max_chars=5_000))
    async with serve(app) as client:
        r = await client.post(SUMMARIZE, json={"inputs": {"text": "x " * 2_501}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == ("inputs.text", "text_too_long")
    assert fake.bodies == []


async def test_splitting_and_counting_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def count(text: str) -> int:
        threads.add(threading.get_ident())
        return len(text.split())

    async def summarize_part(text: str, part: int, parts: int) -> object:
        from app.services.apps.summarize import PartResult

        return PartResult(f"p{part}", "short", 1, 1)

    text = " ".join(f"word{i}" for i in range(2_000))
    await reduce_to_fit(
        text,
        fits=lambda t: count(t) < 100,
        budget=200,
        count=count,
        summarize_part=summarize_part,  # type: ignore[arg-type]
        concurrency=2,
    )
    assert threads
    assert loop_thread not in threads


async def test_a_key_that_cannot_afford_the_whole_map_reduce_is_refused_up_front(
    upstream: respx.MockRouter,
) -> None:
    fake = FakeUpstream(part_reply(words=2)).install(upstream)
    app = keys_app(models=TINY)
    async with running(app) as client:
        # Enough for one part (a prompt of under 512 tokens and its summary), not for all of them.
        _, secret = await create_key(client, limits={"tokens_per_minute": 1_500})
        r = await client.post(SUMMARIZE, json={"inputs": {"text": long_text(60)}}, headers=bearer(secret))
        assert r.status_code == 429, r.text
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert fake.bodies == []  # not one part was sent
        # A key with room for everything gets its summary.
        _, rich = await create_key(client, limits={"tokens_per_minute": 100_000})
        r = await client.post(SUMMARIZE, json={"inputs": {"text": long_text(60)}}, headers=bearer(rich))
        assert r.status_code == 200, r.text
