"""The real embedded model (SmolLM2-135M through llama.cpp): text, streams, seeds, limits, queueing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import LOCAL_DEFAULT_MODEL, LOCAL_EMBEDDING_MODEL
from tests.conftest import LiveServer, _client, make_settings
from tests.sse import events

pytestmark = pytest.mark.slow

GEN = "/v1/generate"
CHAT = "/v1/chat/completions"


async def generate(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("prompt", "Say hello.")
    body.setdefault("max_tokens", 8)
    r = await client.post(GEN, json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_generate_returns_text_with_full_metadata(local_client: httpx.AsyncClient) -> None:
    body = await generate(local_client, prompt="Name a color.", max_tokens=10, seed=3, temperature=0.5)
    assert body["object"] == "generation"
    assert body["model"] == LOCAL_DEFAULT_MODEL
    assert body["provider"] == "local"
    assert body["text"].strip()
    assert body["text"] == body["choices"][0]["text"]
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["sampling"] == {
        "temperature": 0.5,
        "top_p": 1.0,
        "max_tokens": 10,
        "n": 1,
        "stop": [],
        "seed": 3,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "tuned": False,
        "variant": None,
    }
    assert 0 <= body["timings"]["ttft_ms"] <= body["timings"]["total_ms"]
    assert abs(body["created"] - time.time()) < 60


async def test_an_unseeded_request_reports_the_seed_that_reproduces_it(
    local_client: httpx.AsyncClient,
) -> None:
    first = await generate(local_client, prompt="Invent a word.", temperature=1.5, max_tokens=8)
    seed = first["sampling"]["seed"]
    assert isinstance(seed, int)
    again = await generate(local_client, prompt="Invent a word.", temperature=1.5, max_tokens=8, seed=seed)
    assert again["text"] == first["text"]


async def test_the_same_seed_gives_the_same_text(local_client: httpx.AsyncClient) -> None:
    texts = {
        (await generate(local_client, prompt="Tell me a fact.", temperature=1.2, max_tokens=12, seed=42))[
            "text"
        ]
        for _ in range(2)
    }
    assert len(texts) == 1
    others = {
        (await generate(local_client, prompt="Tell me a fact.", temperature=1.2, max_tokens=12, seed=s))[
            "text"
        ]
        for s in (43, 44)
    }
    assert texts | others != texts, "different seeds should give different text"


async def test_n_choices_use_seed_then_seed_plus_one(local_client: httpx.AsyncClient) -> None:
    both = await generate(local_client, prompt="Invent a name.", temperature=1.3, max_tokens=8, seed=100, n=2)
    assert [c["index"] for c in both["choices"]] == [0, 1]
    assert both["sampling"]["n"] == 2
    first = await generate(local_client, prompt="Invent a name.", temperature=1.3, max_tokens=8, seed=100)
    second = await generate(local_client, prompt="Invent a name.", temperature=1.3, max_tokens=8, seed=101)
    assert both["choices"][0]["text"] == first["text"]
    assert both["choices"][1]["text"] == second["text"]
    assert both["usage"]["completion_tokens"] == (
        first["usage"]["completion_tokens"] + second["usage"]["completion_tokens"]
    )
    assert both["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"]


async def test_max_tokens_cuts_the_text_with_finish_reason_length(local_client: httpx.AsyncClient) -> None:
    body = await generate(local_client, prompt="Write a long story about a dragon.", max_tokens=5, seed=1)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


async def test_chat_max_completion_tokens_cuts_too(local_client: httpx.AsyncClient) -> None:
    r = await local_client.post(
        CHAT,
        json={
            "model": LOCAL_DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
            "max_completion_tokens": 4,
            "seed": 1,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    assert body["sampling"]["max_tokens"] == 4


async def test_a_natural_end_is_finish_reason_stop(local_client: httpx.AsyncClient) -> None:
    body = await generate(
        local_client, prompt="What is 2+2? Answer with a number only.", max_tokens=16, temperature=0, seed=1
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop", body
    assert body["usage"]["completion_tokens"] < 16


async def test_a_stop_sequence_ends_the_text_before_it(local_client: httpx.AsyncClient) -> None:
    free = await generate(
        local_client, prompt="Count from 1 to 10, separated by commas.", temperature=0, max_tokens=16
    )
    assert "3" in free["text"], free["text"]
    stopped = await generate(
        local_client,
        prompt="Count from 1 to 10, separated by commas.",
        temperature=0,
        max_tokens=16,
        stop=["3"],
    )
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert "3" not in stopped["text"]
    assert free["text"].startswith(stopped["text"])
    assert stopped["sampling"]["stop"] == ["3"]
    assert stopped["usage"]["completion_tokens"] < free["usage"]["completion_tokens"]


async def test_chat_answers_in_openai_shape(local_client: httpx.AsyncClient) -> None:
    r = await local_client.post(
        CHAT,
        json={
            "model": LOCAL_DEFAULT_MODEL,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is 2 + 2?"},
                {"role": "assistant", "content": "4."},
                {"role": "user", "content": [{"type": "text", "text": "And 3 + 3?"}]},
            ],
            "max_tokens": 8,
            "seed": 7,
            "user": "someone",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == LOCAL_DEFAULT_MODEL
    assert abs(body["created"] - time.time()) < 60
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"].strip()
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert body["sampling"]["seed"] == 7


async def test_generate_stream_sends_deltas_then_metadata_then_done(local_client: httpx.AsyncClient) -> None:
    r = await local_client.post(
        GEN, json={"prompt": "Say hello.", "max_tokens": 8, "seed": 9, "stream": True}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-request-id"]
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    deltas, final = frames[:-2], frames[-2]
    assert deltas
    assert all(d["object"] == "generation.chunk" and d["text"] for d in deltas)
    assert final["object"] == "generation"
    assert final["text"] == "".join(d["text"] for d in deltas)
    assert final["usage"]["completion_tokens"] <= 8
    assert final["sampling"]["seed"] == 9
    assert final["timings"]["ttft_ms"] <= final["timings"]["total_ms"]
    same = await generate(local_client, prompt="Say hello.", max_tokens=8, seed=9)
    assert same["text"] == final["text"]
    assert same["usage"] == final["usage"]


async def test_chat_stream_has_openai_chunks_and_a_usage_chunk(local_client: httpx.AsyncClient) -> None:
    r = await local_client.post(
        CHAT,
        json={
            "model": LOCAL_DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 6,
            "seed": 9,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.status_code == 200, r.text
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text.strip()
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["length"]
    assert usage["completion_tokens"] == 6


async def test_a_json_schema_response_format_constrains_the_answer(local_client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    r = await local_client.post(
        CHAT,
        json={
            "model": LOCAL_DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "Give me a number as JSON."}],
            "max_tokens": 16,
            "seed": 1,
            "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        },
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    answer = json.loads(choice["message"]["content"])
    assert set(answer) == {"a"}
    assert isinstance(answer["a"], int)


async def test_a_strict_schema_the_model_cannot_enforce_is_400(local_client: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}}
    r = await local_client.post(
        CHAT,
        json={
            "model": LOCAL_DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "A number."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": schema, "strict": True},
            },
        },
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "response_format"
    assert "multipleOf" in error["message"]


async def test_a_prompt_beyond_the_context_window_is_400(local_client: httpx.AsyncClient) -> None:
    for stream in (False, True):
        r = await local_client.post(GEN, json={"prompt": "hello " * 2500, "stream": stream})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["param"] == "messages"


async def test_readiness_reports_the_loaded_model(local_client: httpx.AsyncClient) -> None:
    assert (await local_client.get("/healthz")).json() == {"status": "ok"}
    r = await local_client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "providers": {"local": True}}


async def test_models_lists_the_embedded_model(local_client: httpx.AsyncClient) -> None:
    body = (await local_client.get("/v1/models")).json()
    assert body["object"] == "list"
    # The embedded embedding model is listed after the generation models.
    assert [m["id"] for m in body["data"]] == [LOCAL_DEFAULT_MODEL, LOCAL_EMBEDDING_MODEL]
    assert body["data"][0]["owned_by"] == "local"


# -- queueing and disconnects ----------------------------------------------------------------------


async def test_a_full_queue_is_503_with_retry_after() -> None:
    async for client in _client(
        create_app(make_settings(provider="local", local_max_queue=0, local_n_threads=1))
    ):
        request = {"prompt": "Write a story.", "max_tokens": 16, "seed": 1}
        answers = await asyncio.gather(*(client.post(GEN, json=request) for _ in range(4)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses[0] == 200
        assert 503 in statuses
        assert set(statuses) == {200, 503}
        for r in answers:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1
                error = r.json()["error"]
                assert error["type"] == "service_unavailable"
                assert error["code"] == "queue_full"
        streamed = await asyncio.gather(
            *(client.post(GEN, json={**request, "stream": True}) for _ in range(3))
        )
        assert 503 in {r.status_code for r in streamed}
        # Once the model is free again, requests are served.
        assert (await client.post(GEN, json=request)).status_code == 200


def local_provider(app: FastAPI) -> Any:
    return app.state.genserve.providers["local"]


async def until_idle(provider: Any) -> None:
    """Wait until the provider has no request running or waiting (three seconds at most)."""
    deadline = time.monotonic() + 3
    for _ in range(150):
        if provider.queue_depth == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert provider.queue_depth == 0


async def test_a_client_that_disconnects_mid_stream_stops_its_generation(live_server: LiveServer) -> None:
    provider = local_provider(live_server.app)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        body = {
            "prompt": "Write a very long story about a dragon.",
            "max_tokens": 1500,
            "seed": 1,
            "stream": True,
        }
        async with client.stream("POST", GEN, json=body) as r:
            assert r.status_code == 200
            seen = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if seen == 3:
                        break
            assert provider.queue_depth == 1
        # 1500 tokens would take over ten seconds; a stopped generation frees the model at once.
        await until_idle(provider)
        started = time.monotonic()
        r = await client.post(GEN, json={"prompt": "Say hi.", "max_tokens": 4, "seed": 1})
        assert r.status_code == 200
        assert time.monotonic() - started < 3


async def test_a_client_that_gives_up_on_a_plain_request_stops_its_generation(
    live_server: LiveServer,
) -> None:
    provider = local_provider(live_server.app)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        body = {"prompt": "Write a very long story about a dragon.", "max_tokens": 1500, "seed": 2}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.post(GEN, json=body), timeout=0.5)
        await until_idle(provider)
        started = time.monotonic()
        r = await client.post(GEN, json={"prompt": "Say hi.", "max_tokens": 4, "seed": 1})
        assert r.status_code == 200
        assert time.monotonic() - started < 3


async def test_a_client_that_leaves_while_queued_frees_its_place_at_once(live_server: LiveServer) -> None:
    provider = local_provider(live_server.app)
    long_story = {"prompt": "Write a very long story about a dragon.", "max_tokens": 1500, "seed": 3}
    async with (
        httpx.AsyncClient(base_url=live_server.url, timeout=30) as first,
        first.stream("POST", GEN, json={**long_story, "stream": True}) as running,
    ):
        assert running.status_code == 200
        lines = running.aiter_lines()  # kept: a dropped iterator would close the response
        await anext(lines)
        for stream in (True, False):
            async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as second:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(
                        second.post(GEN, json={**long_story, "stream": stream}), timeout=0.5
                    )
            # The queued request is gone well before the running one could have finished.
            deadline = time.monotonic() + 2
            for _ in range(100):
                if provider.queue_depth == 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            assert provider.queue_depth == 1, f"stream={stream}"
    await until_idle(provider)
