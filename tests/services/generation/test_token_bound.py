"""Short prompts are checked against the context window without a tokenizer: the bound used
for that is never below what any provider counts, and a prompt near the limit is still
counted exactly and refused."""

from __future__ import annotations

import pytest
import respx
from fastapi import FastAPI

from app.main import create_app
from app.providers.base import Message
from app.services.generation.pipeline import tokens_at_most
from tests import openai_mock as mock
from tests.conftest import _client, openai_settings

TEXTS = [
    "",
    "Hello",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "你好，世界！请用一句话介绍长城。",
    "Ünïcödé façade — naïve café; emoji 🙂🚀👩‍👩‍👧 and symbols ∑∫√",
    "    indented\n\n\tcode();  // with   spaces\n" * 5,
    "a1b2c3" * 100,
    "<|im_start|>user\n<|endoftext|> special-looking text",
]


def _conversations() -> list[tuple[Message, ...]]:
    return [(Message("user", text),) for text in TEXTS] + [
        (Message("system", TEXTS[3]), Message("user", TEXTS[4]), Message("assistant", TEXTS[2]))
    ]


@pytest.mark.parametrize("messages", _conversations())
async def test_the_bound_holds_for_the_openai_tokenizer(messages: tuple[Message, ...]) -> None:
    app = create_app(openai_settings())
    async with app.router.lifespan_context(app):
        provider = app.state.genserve.providers["openai"]
        assert tokens_at_most(messages) >= provider.count_tokens("gpt-4o-mini", messages)


async def test_the_bound_holds_for_the_embedded_model(local_app: FastAPI) -> None:
    provider = local_app.state.genserve.providers["local"]
    for messages in _conversations():
        assert tokens_at_most(messages) >= provider.count_tokens("smollm2-135m-instruct", messages)


async def test_a_short_request_never_loads_the_tokenizer(upstream: respx.MockRouter) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 2}
    upstream.post("/chat/completions").respond(json=mock.completion("Hi", usage=usage))
    app = create_app(openai_settings())
    async for client in _client(app):
        r = await client.post("/v1/generate", json={"prompt": "Say hello.", "max_tokens": 16})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == 12  # the upstream's count
        provider = app.state.genserve.providers["openai"]
        assert "_encoding" not in vars(provider), "the tokenizer (about 40 MB) was loaded"


async def test_a_prompt_near_the_limit_is_counted_exactly(upstream: respx.MockRouter) -> None:
    route = upstream.post("/chat/completions").respond(json=mock.completion("Hi"))
    models = {"small": {"provider": "openai", "context_window": 300, "max_output_tokens": 100}}
    async for client in _client(create_app(openai_settings(models=models))):
        # ~200 tokens of text in ~600 bytes: over the byte bound, under the window.
        fits = "cat " * 150
        r = await client.post("/v1/generate", json={"model": "small", "prompt": fits, "max_tokens": 50})
        assert r.status_code == 200, r.text
        # Too long by the exact count: refused before anything is sent upstream.
        calls = route.call_count
        r = await client.post(
            "/v1/generate", json={"model": "small", "prompt": "cat " * 290, "max_tokens": 50}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded"
        assert route.call_count == calls
        # Without max_tokens, the default reply length is clamped to what is left.
        r = await client.post("/v1/generate", json={"model": "small", "prompt": fits})
        assert r.status_code == 200, r.text
        assert r.json()["sampling"]["max_tokens"] <= 300 - 150
