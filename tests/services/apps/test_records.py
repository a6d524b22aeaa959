"""Every generation leaves a record, on SQLite and PostgreSQL; text only when store_text is on."""

from __future__ import annotations

import json
from typing import Any

import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import select, text

from app.main import create_app
from app.storage.tables import GenerationRecord
from tests.conftest import openai_settings
from tests.preset_helpers import FakeUpstream, serve, sse_events
from tests.waiting import eventually


async def records(app: FastAPI) -> dict[str, GenerationRecord]:
    state = app.state.genserve
    await state.records.flush()
    async with state.db.session() as session:
        rows = (await session.execute(select(GenerationRecord))).scalars().all()
    return {row.id: row for row in rows}


async def test_every_endpoint_leaves_one_record(database_url: str, upstream: respx.MockRouter) -> None:
    FakeUpstream("All good here.").install(upstream)
    app = create_app(openai_settings(database_url=database_url))
    async with serve(app) as client:
        answers: dict[str, dict[str, Any]] = {}
        r = await client.post("/v1/generate", json={"prompt": "Hello", "max_tokens": 20, "seed": 3})
        answers["generate"] = r.json()
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
        )
        answers["chat"] = r.json()
        r = await client.post("/v1/presets/qa/generate", json={"inputs": {"question": "Why?"}})
        answers["presets"] = r.json()
        r = await client.post("/v1/generate", json={"prompt": "Stream it", "stream": True})
        answers["stream"] = sse_events(r.text)[-2]
        conversation = (await client.post("/v1/conversations", json={})).json()["id"]
        r = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "Hi"})
        answers["conversation"] = r.json()
        stored = await records(app)
    assert len(stored) == 5
    for kind, answer in answers.items():
        row = stored[answer["id"]]
        assert row.endpoint == {"stream": "generate"}.get(kind, kind)
        assert row.model == "gpt-4o-mini"
        assert row.provider == "openai"
        assert row.prompt_tokens == answer["usage"]["prompt_tokens"]
        assert row.completion_tokens == answer["usage"]["completion_tokens"]
        expected = {k: v for k, v in answer["sampling"].items() if k not in ("tuned", "variant")}
        assert row.sampling == expected
        assert row.finish_reason == "stop"
        assert row.aborted is False
        assert row.total_ms >= 0
        assert row.created_at is not None
        assert row.prompt is None  # store_text is off by default
        assert row.output is None
    generate = stored[answers["generate"]["id"]]
    assert (generate.sampling["seed"], generate.sampling["max_tokens"]) == (3, 20)
    assert generate.preset is None
    assert generate.tuned is False
    preset = stored[answers["presets"]["id"]]
    assert preset.preset == "qa"
    assert preset.tuned is True
    assert preset.variant == answers["presets"]["sampling"]["variant"]


async def test_prompt_and_output_are_stored_only_with_store_text(upstream: respx.MockRouter) -> None:
    FakeUpstream("Bonjour.").install(upstream)
    app = create_app(openai_settings(store_text=True))
    async with serve(app) as client:
        r = await client.post("/v1/generate", json={"prompt": "Say hello in French.", "system": "Be brief."})
        row = (await records(app))[r.json()["id"]]
    assert row.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello in French."},
    ]
    assert row.output == ["Bonjour."]


async def test_a_stream_cut_short_is_recorded_as_aborted(upstream: respx.MockRouter) -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Half "}, "finish_reason": None}],
    }
    body = f"data: {json.dumps(chunk)}\n\n" + "data: {not json\n\n"
    upstream.post("/chat/completions").respond(
        200, content=body.encode(), headers={"content-type": "text/event-stream"}
    )
    app = create_app(openai_settings())
    async with serve(app) as client:
        r = await client.post("/v1/generate", json={"prompt": "Go", "stream": True})
        events = sse_events(r.text)
        assert "error" in events[-2]
        stored = list((await records(app)).values())
    assert len(stored) == 1
    assert stored[0].aborted is True
    assert stored[0].finish_reason is None
    assert stored[0].completion_tokens == 1


async def test_records_queued_at_shutdown_are_not_lost(database_url: str, upstream: respx.MockRouter) -> None:
    FakeUpstream().install(upstream)
    app = create_app(openai_settings(database_url=database_url))
    async with serve(app) as client:
        ids = [(await client.post("/v1/generate", json={"prompt": f"n{i}"})).json()["id"] for i in range(20)]
    # A new instance (a restart) on the same database finds every record.
    app = create_app(openai_settings(database_url=database_url))
    async with serve(app):
        assert set(await records(app)) == set(ids)


async def test_failed_generations_leave_no_record(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(500, json={"error": {"message": "boom"}})
    app = create_app(openai_settings())
    async with serve(app) as client:
        r = await client.post("/v1/generate", json={"prompt": "x"})
        assert r.status_code == 502
        assert await records(app) == {}


async def test_records_wait_out_a_database_failure(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    FakeUpstream().install(upstream)
    app = create_app(openai_settings())
    async with serve(app) as client:
        db = app.state.genserve.db
        async with db.engine.begin() as connection:  # the table goes away for a moment
            await connection.execute(text("ALTER TABLE generation_records RENAME TO records_away"))
        r = await client.post("/v1/generate", json={"prompt": "x"})
        assert r.status_code == 200  # the answer does not wait for the database
        await eventually(lambda: "storing 1 generation records failed; retrying" in caplog.text)
        async with db.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE records_away RENAME TO generation_records"))
        assert r.json()["id"] in await records(app)
