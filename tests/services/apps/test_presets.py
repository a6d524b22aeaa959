"""Task presets over HTTP with a mocked upstream: listing, inputs, prompts, sampling, streaming."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest
import respx

from app.main import create_app
from tests.access_helpers import bearer, create_key, keys_app, running
from tests.conftest import openai_settings
from tests.preset_helpers import FakeUpstream, serve, sse_events, system_prompt, user_prompt

SHIPPED = ["customer_service", "copywriting", "qa", "summarize"]

#: Inputs for each shipped preset, and words the prompts sent upstream must contain.
EXAMPLES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "customer_service": (
        {
            "company": "Acme Bikes",
            "product_facts": "Returns are accepted within 30 days.",
            "tone": "formal",
            "message": "Can I return my bike?",
        },
        ["Acme Bikes", "Returns are accepted within 30 days.", "formal"],
    ),
    "copywriting": (
        {"kind": "ad", "topic": "solar lanterns", "audience": "campers", "tone": "playful", "length": 60},
        ["ad copy", "playful", "campers", "60 words"],
    ),
    "qa": (
        {"question": "When was the bridge built?", "context": "The bridge opened in 1932."},
        ["The bridge opened in 1932.", "does not contain the answer"],
    ),
    "summarize": (
        {"text": "The council met on Monday and approved the new park budget.", "style": "bullets"},
        ["bullet points", "100 words"],
    ),
}


async def test_the_four_shipped_presets_are_listed_with_valid_input_schemas(
    openai_client: httpx.AsyncClient,
) -> None:
    r = await openai_client.get("/v1/presets")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [p["name"] for p in data] == SHIPPED
    for preset in data:
        schema = preset["input_schema"]
        jsonschema.Draft202012Validator.check_schema(schema)
        inputs, _ = EXAMPLES[preset["name"]]
        jsonschema.validate(inputs, schema)
        assert preset["title"]
        assert preset["description"]
    copy = next(p for p in data if p["name"] == "copywriting")
    assert copy["input_schema"]["required"] == ["topic"]
    assert "ad" in copy["input_schema"]["properties"]["kind"]["enum"]
    assert copy["input_schema"]["properties"]["length"]["maximum"] == 2000
    assert set(copy["tuning"]["variants"]) == {"focused", "lively", "bold"}
    assert next(p for p in data if p["name"] == "customer_service")["multi_turn"] is True


async def test_one_preset_and_an_unknown_one(openai_client: httpx.AsyncClient) -> None:
    r = await openai_client.get("/v1/presets/qa")
    assert r.status_code == 200
    assert r.json()["sampling"]["temperature"] == 0.2
    r = await openai_client.get("/v1/presets/poetry")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "preset_not_found"
    r = await openai_client.post("/v1/presets/poetry/generate", json={"inputs": {}})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "preset_not_found"


@pytest.mark.parametrize("name", SHIPPED)
async def test_every_preset_generates_through_the_upstream_with_its_inputs_in_the_prompt(
    name: str, openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    fake = FakeUpstream("Here you go.").install(upstream)
    inputs, expected = EXAMPLES[name]
    r = await openai_client.post(f"/v1/presets/{name}/generate", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "generation"
    assert body["text"] == "Here you go."
    assert body["id"].startswith("gen-")
    assert body["usage"]["total_tokens"] > 0
    assert set(body["sampling"]) >= {"temperature", "top_p", "max_tokens", "seed", "tuned", "variant"}
    sent = fake.bodies[-1]
    prompt = system_prompt(sent) + "\n" + user_prompt(sent)
    for words in expected:
        assert words in prompt, (words, prompt)
    # The user turn carries the request itself.
    main_input = {
        "customer_service": "message",
        "copywriting": "topic",
        "qa": "question",
        "summarize": "text",
    }
    assert inputs[main_input[name]] in user_prompt(sent)


async def test_qa_without_context_says_it_may_not_know(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    fake = FakeUpstream().install(upstream)
    r = await openai_client.post(
        "/v1/presets/qa/generate", json={"inputs": {"question": "Why is the sky blue?"}}
    )
    assert r.status_code == 200, r.text
    system = system_prompt(fake.bodies[-1])
    assert "Context:" not in system
    assert "do not know" in system


async def test_preset_defaults_apply_and_explicit_values_win(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    fake = FakeUpstream().install(upstream)
    inputs = EXAMPLES["summarize"][0]
    r = await openai_client.post("/v1/presets/summarize/generate", json={"inputs": inputs})
    assert r.json()["sampling"]["temperature"] == 0.3  # summarize has no tuning: its default
    assert r.json()["sampling"]["max_tokens"] == 300
    assert r.json()["sampling"]["tuned"] is False
    r = await openai_client.post(
        "/v1/presets/summarize/generate",
        json={"inputs": inputs, "temperature": 1.1, "max_tokens": 40, "seed": 7},
    )
    assert r.status_code == 200, r.text
    sampling = r.json()["sampling"]
    assert (sampling["temperature"], sampling["max_tokens"], sampling["seed"]) == (1.1, 40, 7)
    sent = fake.bodies[-1]
    assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (1.1, 40, 7)


@pytest.mark.parametrize(
    ("inputs", "param", "code"),
    [
        ({}, "inputs.topic", "missing_input"),
        ({"topic": "   "}, "inputs.topic", "missing_input"),
        ({"topic": 42}, "inputs.topic", "invalid_input"),
        ({"topic": "x" * 501}, "inputs.topic", "invalid_input"),
        ({"topic": "tea", "kind": "sonnet"}, "inputs.kind", "invalid_input"),
        ({"topic": "tea", "length": 5}, "inputs.length", "invalid_input"),
        ({"topic": "tea", "length": "long"}, "inputs.length", "invalid_input"),
        ({"topic": "tea", "length": True}, "inputs.length", "invalid_input"),
        ({"topic": "tea", "colour": "red"}, "inputs.colour", "unknown_input"),
    ],
)
async def test_wrong_or_missing_inputs_are_refused_naming_the_field(
    inputs: dict[str, Any],
    param: str,
    code: str,
    openai_client: httpx.AsyncClient,
    upstream: respx.MockRouter,
) -> None:
    fake = FakeUpstream().install(upstream)
    r = await openai_client.post("/v1/presets/copywriting/generate", json={"inputs": inputs})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert param.split(".")[1] in error["message"]
    assert fake.bodies == []  # nothing was sent upstream


async def test_sampling_fields_are_checked_like_generate(openai_client: httpx.AsyncClient) -> None:
    r = await openai_client.post(
        "/v1/presets/qa/generate", json={"inputs": {"question": "Why?"}, "temperature": 3}
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "temperature"
    r = await openai_client.post("/v1/presets/qa/generate", json={"inputs": {"question": "Why?"}, "tempo": 1})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tempo"


async def test_preset_streams_like_generate(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    FakeUpstream("one two three").install(upstream)
    r = await openai_client.post(
        "/v1/presets/qa/generate", json={"inputs": {"question": "Count?"}, "stream": True, "n": 1}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["object"] == "generation.chunk"]
    final = events[-2]
    assert final["object"] == "generation"
    assert "".join(c["text"] for c in chunks).strip() == "one two three"
    assert final["text"].strip() == "one two three"
    assert final["sampling"]["tuned"] is True
    assert {c["id"] for c in chunks} == {final["id"]}


async def test_customer_service_system_prompt_for_conversations(upstream: respx.MockRouter) -> None:
    """What the conversations service calls: the system prompt alone needs no `message`."""
    app = create_app(openai_settings())
    async with serve(app):
        presets = app.state.genserve.presets
        system = presets.system_prompt("customer_service", {"company": "Acme"})
        assert "Acme" in system
        assert "friendly" in system  # the tone's default
        from app.errors import InvalidRequest

        with pytest.raises(InvalidRequest) as caught:
            presets.system_prompt("customer_service", {}, param_prefix="preset_inputs")
        assert caught.value.param == "preset_inputs.company"
        choice = await presets.choose_sampling("customer_service", {})
        assert choice.tuned
        assert choice.variant in {"steady", "balanced", "warm"}
        assert choice.defaults["max_tokens"] == 300
        assert not (await presets.choose_sampling("customer_service", {"temperature": 0.1})).tuned


async def test_a_key_limited_to_some_presets_sees_and_uses_only_those(upstream: respx.MockRouter) -> None:
    fake = FakeUpstream().install(upstream)
    async with running(keys_app()) as client:
        _, secret = await create_key(client, name="support-widget", allowed_presets=["qa"])
        _, everything = await create_key(client, name="internal")
        r = await client.get("/v1/presets", headers=bearer(secret))
        assert [p["name"] for p in r.json()["data"]] == ["qa"]
        r = await client.get("/v1/presets", headers=bearer(everything))
        assert [p["name"] for p in r.json()["data"]] == SHIPPED
        for path in ("/v1/presets/summarize", "/v1/presets/summarize/tuning"):
            r = await client.get(path, headers=bearer(secret))
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "preset_not_allowed"
        r = await client.post(
            "/v1/presets/summarize/generate", json={"inputs": {"text": "Long story."}}, headers=bearer(secret)
        )
        assert r.status_code == 403
        assert fake.bodies == []
        r = await client.post(
            "/v1/presets/qa/generate", json={"inputs": {"question": "?"}}, headers=bearer(secret)
        )
        assert r.status_code == 200, r.text
        assert (await client.get("/v1/presets", headers={})).status_code == 401
