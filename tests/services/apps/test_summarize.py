"""The summarize preset: a text longer than the model's context window is split by the model's
own token count and summarized in stages (map-reduce), never truncated."""

from __future__ import annotations

import re
from typing import Any

import respx
from sqlalchemy import select

from app.main import create_app
from app.services.apps.summarize import split_text
from app.storage.tables import GenerationRecord
from tests.conftest import openai_settings
from tests.preset_helpers import FakeUpstream, serve, sse_events, system_prompt, user_prompt

#: A model with a tiny context window, so that a few pages overflow it.
TINY = {"tiny": {"provider": "openai", "context_window": 512, "max_output_tokens": 64}}


def long_text(facts: int) -> str:
    """Paragraphs of numbered facts: each must reach the model in some part."""
    paragraphs = []
    for start in range(0, facts, 5):
        paragraphs.append(
            " ".join(
                f"Fact {i}: the harbour of town {i} handled {i * 37} ships in the year {1900 + i}."
                for i in range(start, min(start + 5, facts))
            )
        )
    return "\n\n".join(paragraphs)


def part_reply(words: int) -> Any:
    def reply(body: dict[str, Any]) -> str:
        found = re.search(r"part (\d+) of (\d+)", system_prompt(body))
        if found is None:
            return "The harbours handled many ships."
        return f"Summary of part {found.group(1)}." + " ships" * words

    return reply


def test_split_text_keeps_every_word_in_order_within_the_budget() -> None:
    text = long_text(60)

    def count(piece: str) -> int:
        return len(piece.split())

    parts = split_text(text, 100, count)
    assert len(parts) > 1
    assert all(count(p) <= 100 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())
    # A single unbroken word longer than the budget is cut, not dropped.
    assert "".join(split_text("x" * 50, 3, lambda s: len(s) // 10)) == "x" * 50


async def test_a_text_longer_than_the_context_is_summarized_in_stages(upstream: respx.MockRouter) -> None:
    fake = FakeUpstream(part_reply(words=2)).install(upstream)
    text = long_text(60)
    app = create_app(openai_settings(models=TINY))
    async with serve(app) as client:
        r = await client.post("/v1/presets/summarize/generate", json={"inputs": {"text": text}})
        assert r.status_code == 200, r.text
        body = r.json()
        await app.state.genserve.records.flush()
        async with app.state.genserve.db.session() as session:
            rows = (await session.execute(select(GenerationRecord))).scalars().all()
    assert body["text"] == "The harbours handled many ships."
    meta = body["metadata"]["summarize"]
    assert meta["input_tokens"] > 512
    stages = meta["stages"]
    assert stages[0]["stage"] == "map"
    assert stages[-1] == {"stage": "final", "parts": 1}
    parts = stages[0]["parts"]
    assert parts >= 3
    assert len(stages[0]["generations"]) == parts
    assert meta["usage"]["total_tokens"] > 0
    maps, final = fake.bodies[:-1], fake.bodies[-1]
    assert len(maps) == parts
    # Nothing was truncated: every fact went to exactly one part.
    for i in range(60):
        assert sum(f"Fact {i}:" in user_prompt(b) for b in maps) == 1, i
    for b in maps:
        assert b["max_tokens"] <= 64
        assert "summarize this part only" in system_prompt(b)
    # The final stage sees the part summaries, not the text.
    assert "Fact 1:" not in user_prompt(final)
    for i in range(1, parts + 1):
        assert f"Summary of part {i}." in user_prompt(final)
    assert "combine them" in system_prompt(final)
    # Each stage's generation has its own record, linked from the final answer's metadata.
    by_id = {row.id: row for row in rows}
    assert set(stages[0]["generations"]) | {body["id"]} == set(by_id)
    assert by_id[stages[0]["generations"][0]].meta["summarize_stage"]["stage"] == "map"
    assert by_id[body["id"]].meta["summarize"]["stages"][0]["parts"] == parts


async def test_summaries_too_long_to_combine_take_another_stage(upstream: respx.MockRouter) -> None:
    fake = FakeUpstream(part_reply(words=45)).install(upstream)
    async with serve(create_app(openai_settings(models=TINY))) as client:
        r = await client.post(
            "/v1/presets/summarize/generate", json={"inputs": {"text": long_text(120), "style": "bullets"}}
        )
    assert r.status_code == 200, r.text
    stages = r.json()["metadata"]["summarize"]["stages"]
    assert [s["stage"] for s in stages] == ["map", "map", "final"]
    assert stages[1]["parts"] < stages[0]["parts"]
    assert len(fake.bodies) == stages[0]["parts"] + stages[1]["parts"] + 1
    assert "bullet points" in system_prompt(fake.bodies[-1])


async def test_a_short_text_is_summarized_in_one_go_and_streams(upstream: respx.MockRouter) -> None:
    fake = FakeUpstream("Ships came and went.").install(upstream)
    async with serve(create_app(openai_settings(models=TINY))) as client:
        r = await client.post(
            "/v1/presets/summarize/generate", json={"inputs": {"text": long_text(5)}, "stream": True}
        )
        events = sse_events(r.text)
        assert "summarize" not in events[-2]["metadata"]
        assert len(fake.bodies) == 1
        # A long one streams its final stage the same way.
        r = await client.post(
            "/v1/presets/summarize/generate", json={"inputs": {"text": long_text(60)}, "stream": True}
        )
        events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["object"] == "generation"
    assert events[-2]["metadata"]["summarize"]["stages"][0]["parts"] >= 3
    assert "".join(e["text"] for e in events[:-2]).strip() == "Ships came and went."


async def test_map_reduce_needs_room_in_the_window(upstream: respx.MockRouter) -> None:
    FakeUpstream().install(upstream)
    small = {"small": {"provider": "openai", "context_window": 256, "max_output_tokens": 200}}
    async with serve(create_app(openai_settings(models=small))) as client:
        r = await client.post(
            "/v1/presets/summarize/generate", json={"inputs": {"text": long_text(40)}, "max_tokens": 200}
        )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "max_tokens"
