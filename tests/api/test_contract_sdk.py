"""Contract: the official `openai` SDK, unchanged, pointed at the service over real HTTP.

Responses are checked with the SDK's own types and against OpenAI's published JSON Schemas
(`shared/openai-spec/openai_chat_schemas.json` beside the clone, when it is there)."""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import respx
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from app.main import create_app
from app.settings import LOCAL_DEFAULT_MODEL, LOCAL_EMBEDDING_MODEL
from tests import openai_mock as mock
from tests.conftest import UPSTREAM, LiveServer, _client, make_settings
from tests.sse import events

_SCHEMA_FILE = Path("shared") / "openai-spec" / "openai_chat_schemas.json"


def _schema_file() -> Path | None:
    """OpenAI's published schemas live outside the project: `OPENAI_CHAT_SCHEMAS`, or a
    `shared/` directory beside the clone or above it, or the workplace's `/work/shared`."""
    if env := os.environ.get("OPENAI_CHAT_SCHEMAS"):
        return Path(env) if Path(env).exists() else None
    here = Path(__file__).resolve()
    for candidate in [*(parent / _SCHEMA_FILE for parent in here.parents[1:]), Path("/work") / _SCHEMA_FILE]:
        if candidate.exists():
            return candidate
    return None


LOCAL = LOCAL_DEFAULT_MODEL
REMOTE = "gpt-4o-mini"
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]


@cache
def _schemas() -> dict[str, Any] | None:
    path = _schema_file()
    if path is None:
        # The schemas are not the project's to ship. Without them the SDK's own types and the
        # strict fields checked below (which the SDK would accept missing) still hold.
        warnings.warn("OpenAI's JSON Schemas not found: checking with the SDK's types only", stacklevel=2)
        return None
    schemas: dict[str, Any] = json.loads(path.read_text())["schemas"]
    return schemas


def conforms(name: str, instance: Any) -> None:
    """Assert `instance` is valid against OpenAI's published schema `name`."""
    schemas = _schemas()
    if schemas is None:
        return
    jsonschema.Draft202012Validator(schemas[name]).validate(instance)


def check_completion(data: dict[str, Any]) -> ChatCompletion:
    conforms("CreateChatCompletionResponse", data)
    for choice in data["choices"]:  # required by OpenAI's schema, optional to the SDK
        assert "logprobs" in choice
        assert "refusal" in choice["message"]
    completion = ChatCompletion.model_validate(data)
    assert completion.usage is not None
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    return completion


def check_chunk(chunk: ChatCompletionChunk) -> None:
    data = chunk.to_dict()
    conforms("CreateChatCompletionStreamResponse", data)
    ChatCompletionChunk.model_validate(data)


def check_error(exc: openai.APIStatusError, status: int, code: str | None, param: str | None = None) -> None:
    assert exc.status_code == status
    assert exc.code == code
    assert exc.param == param
    body = exc.response.json()
    conforms("ErrorResponse", body)
    assert body["error"]["message"]


# -- clients -------------------------------------------------------------------------------------


@pytest.fixture
def sync_client(live_server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0, timeout=60
    ) as client:
        yield client


@pytest.fixture
async def async_client(live_server: LiveServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0, timeout=60
    ) as client:
        yield client


@pytest.fixture
def remote(live_server: LiveServer) -> Iterator[respx.MockRouter]:
    """The mocked upstream behind `gpt-4o-mini`; requests to the service itself go through."""
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        yield router


def upstream_chat(router: respx.MockRouter) -> respx.Route:
    return router.post(f"{UPSTREAM}/chat/completions")


# -- the mocked upstream, through the SDK --------------------------------------------------------


def test_sync_chat_against_the_upstream(sync_client: openai.OpenAI, remote: respx.MockRouter) -> None:
    upstream_chat(remote).respond(
        json=mock.completion("Hi there!", usage={"prompt_tokens": 8, "completion_tokens": 3})
    )
    raw = sync_client.chat.completions.with_raw_response.create(model=REMOTE, messages=HELLO, seed=3)
    assert raw.headers["x-request-id"]
    completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "Hi there!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == REMOTE
    assert completion.usage is not None
    assert completion.usage.total_tokens == 11
    check_completion(raw.http_response.json())


async def test_async_chat_against_the_upstream(
    async_client: openai.AsyncOpenAI, remote: respx.MockRouter
) -> None:
    upstream_chat(remote).respond(json=mock.completion("one", "two", finish_reason="length"))
    raw = await async_client.chat.completions.with_raw_response.create(
        model=REMOTE, messages=HELLO, n=2, stop=["\n"], max_tokens=5
    )
    completion = raw.parse()
    assert [c.message.content for c in completion.choices] == ["one", "two"]
    assert {c.finish_reason for c in completion.choices} == {"length"}
    check_completion(raw.http_response.json())


def test_sync_stream_against_the_upstream(sync_client: openai.OpenAI, remote: respx.MockRouter) -> None:
    upstream_chat(remote).mock(
        return_value=mock.sse_response([*mock.text_chunks("Hel", "lo"), mock.usage_chunk(6, 2)])
    )
    stream = sync_client.chat.completions.create(
        model=REMOTE, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    for chunk in chunks:
        assert isinstance(chunk, ChatCompletionChunk)
        check_chunk(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 2)
    assert len({c.id for c in chunks}) == 1


async def test_async_stream_against_the_upstream(
    async_client: openai.AsyncOpenAI, remote: respx.MockRouter
) -> None:
    upstream_chat(remote).mock(return_value=mock.sse_response(mock.text_chunks("Hi", "!")))
    stream = await async_client.chat.completions.create(model=REMOTE, messages=HELLO, stream=True)
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        check_chunk(chunk)
    assert all(c.choices for c in chunks), "no usage chunk unless asked for"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi!"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_sync_sdk_sees_a_broken_upstream_stream_as_an_api_error(
    sync_client: openai.OpenAI, remote: respx.MockRouter
) -> None:
    upstream_chat(remote).mock(
        return_value=mock.broken_sse_response([mock.chunk("", role=True), mock.chunk("Hal")])
    )
    stream = sync_client.chat.completions.create(model=REMOTE, messages=HELLO, stream=True)
    received: list[str] = []

    def read_all() -> None:
        for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError) as caught:
        read_all()
    assert "".join(received) == "Hal"
    assert caught.value.type == "upstream_error"


@pytest.mark.parametrize(
    ("status", "headers", "exception", "expected_status", "code"),
    [
        (429, {"retry-after": "9"}, openai.RateLimitError, 429, "upstream_rate_limited"),
        (500, {}, openai.InternalServerError, 502, "upstream_error"),
        (401, {}, openai.InternalServerError, 502, "upstream_auth_failed"),
        (400, {}, openai.BadRequestError, 400, "upstream_bad_request"),
    ],
)
def test_sync_upstream_errors_raise_the_matching_sdk_exceptions(
    sync_client: openai.OpenAI,
    remote: respx.MockRouter,
    status: int,
    headers: dict[str, str],
    exception: type[openai.APIStatusError],
    expected_status: int,
    code: str,
) -> None:
    upstream_chat(remote).respond(status, headers=headers, json={"error": {"message": "no", "type": "x"}})
    with pytest.raises(exception) as caught:
        sync_client.chat.completions.create(model=REMOTE, messages=HELLO)
    check_error(caught.value, expected_status, code)
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "9"


async def test_async_upstream_timeout_is_a_504_server_error(
    async_client: openai.AsyncOpenAI, remote: respx.MockRouter
) -> None:
    upstream_chat(remote).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(openai.InternalServerError) as caught:
        await async_client.chat.completions.create(model=REMOTE, messages=HELLO, stream=True)
    check_error(caught.value, 504, "upstream_timeout")


async def test_async_unreachable_upstream_is_a_502_server_error(
    async_client: openai.AsyncOpenAI, remote: respx.MockRouter
) -> None:
    upstream_chat(remote).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(openai.InternalServerError) as caught:
        await async_client.chat.completions.create(model=REMOTE, messages=HELLO)
    check_error(caught.value, 502, "upstream_unreachable")


# -- the embedded model, through the SDK ---------------------------------------------------------


def test_sync_chat_with_the_embedded_model(sync_client: openai.OpenAI) -> None:
    raw = sync_client.chat.completions.with_raw_response.create(
        model=LOCAL, messages=HELLO, max_tokens=6, seed=11, temperature=0.9
    )
    completion = check_completion(raw.http_response.json())
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    again = sync_client.chat.completions.create(
        model=LOCAL, messages=HELLO, max_tokens=6, seed=11, temperature=0.9
    )
    assert again.choices[0].message.content == completion.choices[0].message.content


async def test_async_chat_with_the_embedded_model(async_client: openai.AsyncOpenAI) -> None:
    raw = await async_client.chat.completions.with_raw_response.create(
        model=LOCAL, messages=HELLO, max_completion_tokens=3, n=2, seed=5
    )
    completion = check_completion(raw.http_response.json())
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in completion.choices)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6


def test_sync_stream_with_the_embedded_model(sync_client: openai.OpenAI) -> None:
    stream = sync_client.chat.completions.create(
        model=LOCAL, messages=HELLO, max_tokens=5, seed=2, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    for chunk in chunks:
        check_chunk(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage = chunks[-1].usage
    assert usage is not None
    assert chunks[-1].choices == []
    assert usage.completion_tokens == 5


async def test_async_stream_with_the_embedded_model(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(
        model=LOCAL, messages=HELLO, max_tokens=5, seed=2, stream=True
    )
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        check_chunk(chunk)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage is None


# -- errors the service raises itself ------------------------------------------------------------


def test_sync_bad_input_raises_bad_request(sync_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sync_client.chat.completions.create(model=LOCAL, messages=HELLO, n=9)
    check_error(caught.value, 400, "invalid_value", "n")
    with pytest.raises(openai.BadRequestError) as caught:
        sync_client.chat.completions.create(model=LOCAL, messages=[])
    check_error(caught.value, 400, "invalid_value", "messages")


async def test_async_unsupported_parameter_raises_bad_request(async_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await async_client.chat.completions.create(model=LOCAL, messages=HELLO, logit_bias={"50": 5})
    assert caught.value.param == "logit_bias"
    assert caught.value.code == "unsupported_parameter"


@pytest.mark.parametrize("stream", [False, True])
def test_sync_unknown_model_raises_not_found(sync_client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sync_client.chat.completions.create(model="gpt-9", messages=HELLO, stream=stream)
    check_error(caught.value, 404, "model_not_found", "model")


async def test_async_unknown_model_raises_not_found(async_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await async_client.models.retrieve("gpt-9")
    check_error(caught.value, 404, "model_not_found", "model")


def test_sync_context_overflow_raises_bad_request(sync_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sync_client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "hi " * 2500}])
    check_error(caught.value, 400, "context_length_exceeded", "messages")


# -- models ----------------------------------------------------------------------------------------


def test_sync_models_list_and_retrieve(sync_client: openai.OpenAI, live_server: LiveServer) -> None:
    page = sync_client.models.list()
    assert [m.id for m in page.data] == [LOCAL, REMOTE, LOCAL_EMBEDDING_MODEL]
    for model in page.data:
        assert isinstance(model, Model)
        assert model.object == "model"
        Model.model_validate(model.to_dict())
        conforms("Model", model.to_dict())
    raw = httpx.get(f"{live_server.url}/v1/models").json()
    conforms("ListModelsResponse", raw)
    model = sync_client.models.retrieve(REMOTE)
    assert model.id == REMOTE
    assert model.owned_by == "openai"


async def test_async_models_list(async_client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in async_client.models.list()]
    assert ids == [LOCAL, REMOTE, LOCAL_EMBEDDING_MODEL]
    model = await async_client.models.retrieve(LOCAL)
    assert model.owned_by == "local"
    conforms("Model", model.to_dict())


# -- the raw wire format, checked against the schemas directly ---------------------------------------


def test_raw_chat_stream_chunks_conform(live_server: LiveServer) -> None:
    r = httpx.post(
        f"{live_server.url}/v1/chat/completions",
        json={
            "model": LOCAL,
            "messages": HELLO,
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=60,
    )
    assert r.status_code == 200
    frames = events(r.text)
    assert frames[-1] == "[DONE]"
    for frame in frames[:-1]:
        conforms("CreateChatCompletionStreamResponse", frame)
        ChatCompletionChunk.model_validate(frame)
    assert frames[-2]["choices"] == []
    assert {f["created"] for f in frames[:-1]} == {frames[0]["created"]}


def test_the_shape_check_refuses_what_the_sdk_would_let_through() -> None:
    """The check above is stricter than the SDK: a message without `refusal` passes
    `ChatCompletion.model_validate` but not `check_completion` (schemas found or not)."""
    data = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": REMOTE,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    ChatCompletion.model_validate(data)
    with pytest.raises((AssertionError, jsonschema.ValidationError)):
        check_completion(data)
    data["choices"][0]["message"]["refusal"] = None
    check_completion(data)


async def test_a_full_local_queue_raises_a_server_error_with_retry_after() -> None:
    """The async SDK can also run in-process, through an ASGI transport."""
    app = create_app(make_settings(provider="local", local_max_queue=0, local_n_threads=1))
    async for http_client in _client(app):
        sdk = openai.AsyncOpenAI(
            base_url="http://genserve.test/v1", api_key="unused", max_retries=0, http_client=http_client
        )
        calls = [
            sdk.chat.completions.create(model=LOCAL, messages=HELLO, max_tokens=12, seed=1) for _ in range(3)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        refused = [r for r in results if isinstance(r, openai.APIStatusError)]
        served = [r for r in results if isinstance(r, ChatCompletion)]
        assert served
        assert refused
        assert len(served) + len(refused) == 3
        for exc in refused:
            assert isinstance(exc, openai.InternalServerError)
            check_error(exc, 503, "queue_full")
            assert int(exc.response.headers["retry-after"]) >= 1
