"""`POST /v1/completions` through the official SDK: the embedded model continues raw text; an
upstream serves it from its `/completions` when the model's route says so, else from chat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import respx
from openai.types import Completion

from app.main import create_app
from app.settings import LOCAL_DEFAULT_MODEL
from tests import openai_mock as mock
from tests.access_helpers import create_key, keys_app
from tests.conftest import UPSTREAM, LiveServer, mixed_settings, serve_in_thread, serving
from tests.openai_schemas import (
    completion_chunk_conforms,
    completion_conforms,
    error_conforms,
    request_conforms,
)
from tests.sse import events

LOCAL = LOCAL_DEFAULT_MODEL
CHAT_ONLY = "gpt-4o-mini"
INSTRUCT = "gpt-3.5-turbo-instruct"
SEED_CALL: dict[str, Any] = {
    "prompt": "What is the capital of France?",
    "max_tokens": 10,
    "n": 1,
    "stop": None,
    "temperature": 0.5,
}


def text_completion(*texts: str, finish_reason: str = "stop", usage: bool = True) -> dict[str, Any]:
    """An upstream's legacy `text_completion` body."""
    body: dict[str, Any] = {
        "id": "cmpl-upstream",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": INSTRUCT,
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": finish_reason}
            for i, text in enumerate(texts)
        ],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    return body


def text_chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "cmpl-upstream",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": INSTRUCT,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    """The embedded model, a chat-only upstream model and one whose upstream has `/completions`."""
    settings = mixed_settings(
        models={
            LOCAL: {"provider": "local", "context_window": 2048, "max_output_tokens": 2048},
            CHAT_ONLY: {"provider": "openai"},
            INSTRUCT: {"provider": "openai", "completions": True},
        }
    )
    with serve_in_thread(create_app(settings)) as live:
        yield live


def checked(raw: Any) -> Completion:
    completion_conforms(raw.http_response.json())
    parsed = raw.parse()
    assert isinstance(parsed, Completion)
    return parsed


# -- the embedded model --------------------------------------------------------------------------


def test_the_seed_call_answers_on_the_embedded_model(client: openai.OpenAI) -> None:
    completion = checked(client.completions.with_raw_response.create(model=LOCAL, seed=5, **SEED_CALL))
    assert completion.object == "text_completion"
    assert completion.model == LOCAL
    [choice] = completion.choices
    assert choice.text.strip()  # a raw continuation never ends before its first token
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= 10


def test_the_seed_call_with_a_seed_names_paris(client: openai.OpenAI) -> None:
    first = client.completions.create(model=LOCAL, seed=5, **SEED_CALL)
    again = client.completions.create(model=LOCAL, seed=5, **SEED_CALL)
    assert "Paris" in first.choices[0].text
    assert again.choices[0].text == first.choices[0].text


def test_raw_continuation_uses_no_chat_template(client: openai.OpenAI) -> None:
    """The model continues the text itself: a list ending in 'three,' goes on counting."""
    completion = client.completions.create(
        model=LOCAL, prompt="one, two, three, four,", max_tokens=4, temperature=0, stop=["\n"]
    )
    assert "five" in completion.choices[0].text


async def test_prompts_and_n_number_the_choices_and_echo_repeats_the_prompt(
    async_client: openai.AsyncOpenAI,
) -> None:
    prompts = ["The capital of France is", "Roses are red,"]
    raw = await async_client.completions.with_raw_response.create(
        model=LOCAL, prompt=prompts, n=2, max_tokens=3, echo=True, seed=1
    )
    completion_conforms(json.loads(raw.http_response.content))
    completion = raw.parse()
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    for choice in completion.choices:
        assert choice.text.startswith(prompts[choice.index // 2])
        assert len(choice.text) > len(prompts[choice.index // 2])
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 4 * 3


def test_the_stream_with_usage_carries_null_usage_until_the_last_chunk(server: LiveServer) -> None:
    body = {"model": LOCAL, "stream": True, "stream_options": {"include_usage": True}, "seed": 5, **SEED_CALL}
    r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
    assert r.status_code == 200
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    for chunk in chunks:
        completion_chunk_conforms(chunk)
        assert chunk["object"] == "text_completion"
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == len([c for c in chunks[:-1] if c["choices"][0]["text"]])
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_the_sdk_streams_text_and_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=LOCAL, stream=True, stream_options={"include_usage": True}, seed=5, **SEED_CALL
    )
    pieces: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.text)
    whole = client.completions.create(model=LOCAL, seed=5, **SEED_CALL)
    assert "".join(pieces) == whole.choices[0].text
    assert usage is not None
    assert usage.completion_tokens > 0


async def test_async_stream_without_usage_has_no_usage_field(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        r = await http.post("/v1/completions", json={"model": LOCAL, "stream": True, **SEED_CALL})
    chunks = events(r.text)[:-1]
    assert chunks
    assert all("usage" not in chunk for chunk in chunks)
    for chunk in chunks:
        completion_chunk_conforms(chunk)


def test_logprobs_join_back_to_the_text_in_the_legacy_shape(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model=LOCAL, prompt="The capital of France is", max_tokens=5, logprobs=2, seed=1
    )
    body = raw.http_response.json()
    completion_conforms(body)
    [choice] = raw.parse().choices
    logprobs = choice.logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None
    assert logprobs.text_offset is not None
    assert logprobs.token_logprobs is not None
    assert logprobs.top_logprobs is not None
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert logprob <= 0
        assert top[token] == logprob  # the chosen token is among the alternatives
        assert 1 <= len(top) <= 3


def test_streamed_logprobs_continue_their_offsets(server: LiveServer) -> None:
    body = {"model": LOCAL, "prompt": "One, two,", "max_tokens": 4, "logprobs": 0, "seed": 1, "stream": True}
    chunks = events(httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).text)[:-1]
    text = ""
    for chunk in chunks:
        completion_chunk_conforms(chunk)
        [choice] = chunk["choices"]
        if choice["logprobs"] is not None:
            assert choice["logprobs"]["text_offset"][0] == len(text)
            assert "".join(choice["logprobs"]["tokens"]) == choice["text"]
        text += choice["text"]
    assert text


def test_several_prompts_stream_in_turn_numbered_prompt_by_choice(server: LiveServer) -> None:
    body = {"model": LOCAL, "prompt": ["Red,", "One,"], "n": 2, "max_tokens": 3, "echo": True, "stream": True}
    request_conforms("openai_completions_schemas.json", "CreateCompletionRequest", body)
    chunks = events(httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).text)[:-1]
    texts: dict[int, str] = {}
    for chunk in chunks:
        completion_chunk_conforms(chunk)
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert sorted(texts) == [0, 1, 2, 3]
    assert all(texts[i].startswith("Red,") for i in (0, 1))
    assert all(texts[i].startswith("One,") for i in (2, 3))
    first = [c["choices"][0]["index"] for c in chunks]
    assert first == sorted(first, key=lambda i: i // 2)  # prompt by prompt


def test_the_requests_here_are_openais_own_shapes() -> None:
    for body in (
        {"model": LOCAL, **SEED_CALL},
        {"model": LOCAL, "prompt": ["a", "b"], "n": 2, "echo": True, "logprobs": 2, "best_of": 2},
        {"model": LOCAL, "prompt": "a", "stream": True, "stream_options": {"include_usage": True}},
    ):
        request_conforms("openai_completions_schemas.json", "CreateCompletionRequest", body)


def test_refusals_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=LOCAL, prompt=[[1, 2, 3]], max_tokens=3)
    assert caught.value.param == "prompt"
    error_conforms(caught.value.response.json())
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=LOCAL, prompt="Hi", suffix="end")
    assert caught.value.param == "suffix"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=LOCAL, prompt="Hi", best_of=2)
    assert caught.value.param == "best_of"


# -- upstreams -----------------------------------------------------------------------------------


def test_the_seed_call_through_an_upstream_with_completions(
    client: openai.OpenAI, remote: respx.MockRouter
) -> None:
    route = remote.post(f"{UPSTREAM}/completions").respond(json=text_completion(" Paris."))
    completion = checked(client.completions.with_raw_response.create(model=INSTRUCT, **SEED_CALL))
    assert completion.choices[0].text == " Paris."
    assert completion.usage is not None
    assert completion.usage.total_tokens == 10
    sent = json.loads(route.calls.last.request.content)
    assert sent["prompt"] == SEED_CALL["prompt"]
    assert sent["model"] == INSTRUCT
    assert (sent["max_tokens"], sent["n"], sent["temperature"]) == (10, 1, 0.5)
    assert "messages" not in sent


def test_the_seed_call_through_a_chat_only_upstream_is_one_user_turn(
    client: openai.OpenAI, remote: respx.MockRouter
) -> None:
    route = remote.post(f"{UPSTREAM}/chat/completions").respond(
        json=mock.completion(
            "The capital of France is Paris.", usage={"prompt_tokens": 14, "completion_tokens": 8}
        )
    )
    completion = checked(client.completions.with_raw_response.create(model=CHAT_ONLY, **SEED_CALL))
    assert completion.choices[0].text == "The capital of France is Paris."
    sent = json.loads(route.calls.last.request.content)
    assert sent["messages"] == [{"role": "user", "content": SEED_CALL["prompt"]}]
    assert sent["max_tokens"] == 10


async def test_async_stream_through_an_upstream_with_completions(
    async_client: openai.AsyncOpenAI, remote: respx.MockRouter
) -> None:
    route = remote.post(f"{UPSTREAM}/completions").respond(
        headers={"content-type": "text/event-stream"},
        content=mock.sse([text_chunk(" Par"), text_chunk("is."), text_chunk("", "stop")]),
    )
    stream = await async_client.completions.create(
        model=INSTRUCT, stream=True, stream_options={"include_usage": True}, **SEED_CALL
    )
    texts: list[str] = []
    finish = None
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts.append(choice.text)
            finish = choice.finish_reason or finish
    assert "".join(texts) == " Paris."
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens > 0
    assert json.loads(route.calls.last.request.content)["stream"] is True


def test_legacy_logprobs_pass_through_an_upstream(client: openai.OpenAI, remote: respx.MockRouter) -> None:
    body = text_completion(" Paris")
    body["choices"][0]["logprobs"] = {
        "tokens": [" Paris"],
        "token_logprobs": [-0.1],
        "top_logprobs": [{" Paris": -0.1, " Lyon": -2.5}],
        "text_offset": [0],
    }
    route = remote.post(f"{UPSTREAM}/completions").respond(json=body)
    completion = client.completions.create(model=INSTRUCT, prompt="The capital of France is", logprobs=1)
    assert json.loads(route.calls.last.request.content)["logprobs"] == 1
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens == [" Paris"]
    assert logprobs.top_logprobs == [{" Paris": -0.1, " Lyon": -2.5}]


def test_logit_bias_goes_to_the_upstream(client: openai.OpenAI, remote: respx.MockRouter) -> None:
    route = remote.post(f"{UPSTREAM}/completions").respond(json=text_completion("ok"))
    client.completions.create(model=INSTRUCT, prompt="Hi", logit_bias={"50256": -100})
    assert json.loads(route.calls.last.request.content)["logit_bias"] == {"50256": -100}


# -- gateway features ----------------------------------------------------------------------------


async def test_keys_usage_and_allowed_models_apply() -> None:
    models = {
        INSTRUCT: {"provider": "openai", "completions": True, "input_price_per_mtok": 1.0},
        CHAT_ONLY: {"provider": "openai"},
    }
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        upstream.post("/completions").respond(json=text_completion("Paris"))
        async with serving(keys_app(models=models)) as http:
            _, secret = await create_key(http, allowed_models=[INSTRUCT])
            auth = {"authorization": f"Bearer {secret}"}
            r = await http.post("/v1/completions", json={"model": INSTRUCT, "prompt": "Hi"})
            assert r.status_code == 401
            r = await http.post("/v1/completions", json={"model": CHAT_ONLY, "prompt": "Hi"}, headers=auth)
            assert r.status_code == 403
            r = await http.post("/v1/completions", json={"model": INSTRUCT, "prompt": "Hi"}, headers=auth)
            assert r.status_code == 200, r.text
            usage = (await http.get("/v1/usage", headers=auth)).json()
            assert usage["totals"]["requests"] == 1
            assert usage["totals"]["prompt_tokens"] == 7


async def test_the_cache_answers_a_repeated_deterministic_prompt() -> None:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream:
        route = upstream.post("/completions").respond(json=text_completion("Paris"))
        upstream.post("/chat/completions").respond(json=mock.completion("Paris"))
        app = create_app(
            mixed_settings(cache_enabled=True, models={INSTRUCT: {"provider": "openai", "completions": True}})
        )
        async with serving(app) as http:
            body = {"model": INSTRUCT, "prompt": "The capital of France is", "temperature": 0}
            first = await http.post("/v1/completions", json=body)
            second = await http.post("/v1/completions", json=body)
            chat_like = await http.post(
                "/v1/chat/completions",
                json={
                    "model": INSTRUCT,
                    "messages": [{"role": "user", "content": body["prompt"]}],
                    "temperature": 0,
                },
            )
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert second.json()["choices"][0]["text"] == "Paris"
        assert route.call_count == 1
        # A raw prompt and a chat message of the same text are different requests.
        assert chat_like.headers["x-cache"] == "miss"
