"""The gateway's features apply to legacy completions and the Responses API as to chat: records,
metrics, redaction of personal data, fallbacks; a stored response is another table in the same
database as conversations."""

from __future__ import annotations

import json
from typing import Any

import respx
from fastapi import FastAPI
from sqlalchemy import select

from app.main import create_app
from app.storage.tables import GenerationRecord
from tests import openai_mock as mock
from tests.conftest import UPSTREAM, openai_settings, serving

INSTRUCT = "gpt-3.5-turbo-instruct"
CHAT = "gpt-4o-mini"
MODELS: dict[str, Any] = {
    INSTRUCT: {"provider": "openai", "completions": True, "fallbacks": [CHAT]},
    CHAT: {"provider": "openai"},
}


def text_completion(text: str) -> dict[str, Any]:
    return {
        "id": "cmpl-up",
        "object": "text_completion",
        "created": 1,
        "model": INSTRUCT,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10},
    }


async def records(app: FastAPI) -> dict[str, GenerationRecord]:
    state = app.state.genserve
    await state.records.flush()
    async with state.db.session() as session:
        rows = (await session.execute(select(GenerationRecord))).scalars().all()
    return {row.id: row for row in rows}


async def test_both_endpoints_leave_records_and_metrics() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        upstream.post("/completions").respond(json=text_completion(" Paris."))
        upstream.post("/chat/completions").respond(
            json=mock.completion("Paris.", usage={"prompt_tokens": 12, "completion_tokens": 2})
        )
        app = create_app(openai_settings(models=MODELS, store_text=True))
        async with serving(app) as http:
            two = await http.post("/v1/completions", json={"model": INSTRUCT, "prompt": ["A", "B"]})
            resp = await http.post("/v1/responses", json={"model": CHAT, "input": "Capital of France?"})
            assert (two.status_code, resp.status_code) == (200, 200)
            stored = await records(app)
            exposition = (await http.get("/metrics")).text
    # One record per prompt (each its own generation), the first under the response's id.
    completions = [r for r in stored.values() if r.endpoint == "completions"]
    assert len(completions) == 2
    assert two.json()["id"] in stored
    assert {tuple(r.output or ()) for r in completions} == {(" Paris.",)}
    assert sorted(r.prompt[0]["content"] for r in completions if r.prompt) == ["A", "B"]
    record = stored[resp.json()["id"]]
    assert record.endpoint == "responses"
    assert (record.prompt_tokens, record.completion_tokens) == (12, 2)
    assert 'endpoint="completions"' in exposition
    assert 'endpoint="responses"' in exposition


async def test_personal_data_is_redacted_from_a_raw_prompt_and_restored() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/completions").respond(json=text_completion(" I wrote to [EMAIL_1]."))
        async with serving(create_app(openai_settings(models=MODELS))) as http:
            r = await http.post(
                "/v1/completions",
                json={"model": INSTRUCT, "prompt": "Mail ada@example.com:"},
                headers={"x-privacy-mode": "redact"},
            )
            blocked = await http.post(
                "/v1/completions",
                json={"model": INSTRUCT, "prompt": "Mail ada@example.com:"},
                headers={"x-privacy-mode": "block"},
            )
    assert json.loads(route.calls.last.request.content)["prompt"] == "Mail [EMAIL_1]:"
    assert r.json()["choices"][0]["text"] == " I wrote to ada@example.com."
    assert blocked.status_code == 400
    assert blocked.json()["error"]["param"] == "prompt"


async def test_personal_data_in_a_response_chain_never_leaves() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/chat/completions").respond(json=mock.completion("Noted, [EMAIL_1]."))
        async with serving(create_app(openai_settings(models=MODELS, privacy_mode="redact"))) as http:
            first = (
                await http.post("/v1/responses", json={"model": CHAT, "input": "I am ada@example.com"})
            ).json()
            assert first["output"][0]["content"][0]["text"] == "Noted, ada@example.com."
            await http.post(
                "/v1/responses",
                json={"model": CHAT, "input": "Who am I?", "previous_response_id": first["id"]},
            )
    for call in route.calls:
        assert "ada@example.com" not in call.request.content.decode()


async def test_a_failing_completions_upstream_falls_back_to_chat() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        upstream.post("/completions").respond(503, json={"error": {"message": "down"}})
        chat = upstream.post("/chat/completions").respond(json=mock.completion(" Paris."))
        async with serving(create_app(openai_settings(models=MODELS))) as http:
            r = await http.post(
                "/v1/completions", json={"model": INSTRUCT, "prompt": "The capital of France is"}
            )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == CHAT
    assert r.json()["choices"][0]["text"] == " Paris."
    assert json.loads(chat.calls.last.request.content)["messages"] == [
        {"role": "user", "content": "The capital of France is"}
    ]


async def test_feedback_rates_a_response_by_its_id() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        upstream.post("/chat/completions").respond(json=mock.completion("Paris."))
        app = create_app(openai_settings(models=MODELS))
        async with serving(app) as http:
            rid = (await http.post("/v1/responses", json={"model": CHAT, "input": "Capital?"})).json()["id"]
            await app.state.genserve.records.flush()
            r = await http.post("/v1/feedback", json={"generation_id": rid, "rating": "up"})
    assert r.status_code in (200, 201), r.text


async def test_an_upstream_error_mid_stream_ends_the_events_with_an_error() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        upstream.post("/chat/completions").mock(
            return_value=mock.broken_sse_response([mock.chunk("", role=True), mock.chunk("Par")])
        )
        async with serving(create_app(openai_settings(models=MODELS))) as http:
            r = await http.post("/v1/responses", json={"model": CHAT, "input": "Capital?", "stream": True})
            rid_events = [line for line in r.text.splitlines() if line.startswith("data: ")]
            assert r.status_code == 200
            assert '"response.output_text.delta"' in r.text
            assert json.loads(rid_events[-2].removeprefix("data: "))["error"]["type"] == "upstream_error"
            assert rid_events[-1] == "data: [DONE]"
            # A cut-short response is not stored.
            created = json.loads(rid_events[0].removeprefix("data: "))["response"]["id"]
            assert (await http.get(f"/v1/responses/{created}")).status_code == 404
