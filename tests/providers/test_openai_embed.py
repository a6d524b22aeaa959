"""The upstream embedder at the HTTP level: a mocked OpenAI `/embeddings` behind the real `openai`
client, through the service's own `/v1/embeddings` as well."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import respx

from app.errors import InvalidRequest, RateLimited, UpstreamError
from app.main import create_app
from app.providers.base import Embedder
from app.providers.openai import OpenAIEmbedder
from app.settings import EmbeddingRoute
from tests.conftest import openai_settings, serving
from tests.openai_schemas import conforms

ROUTE = EmbeddingRoute(provider="openai", upstream_model="text-embedding-3-small", dimensions=4)
UPSTREAM_MODELS = {
    "text-embedding-3-small": {
        "provider": "openai",
        "dimensions": 4,
        "allow_dimensions": True,
        "input_price_per_mtok": 0.02,
    },
    "bge-m3": {"provider": "openai", "upstream_model": "BAAI/bge-m3", "dimensions": 4},
}


def b64(vector: list[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def answer(vectors: list[Any], *, prompt_tokens: int | None = 7, shuffle: bool = False) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    if shuffle:
        data.reverse()
    body: dict[str, Any] = {"object": "list", "data": data, "model": "text-embedding-3-small"}
    if prompt_tokens is not None:
        body["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return body


def sent(route: respx.Route) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


@pytest.fixture
async def embedder() -> AsyncIterator[OpenAIEmbedder]:
    e = OpenAIEmbedder("text-embedding-3-small", ROUTE, openai_settings())
    yield e
    await e.aclose()


async def test_asks_for_base64_once_for_all_inputs_and_decodes_it(
    upstream: respx.MockRouter, embedder: OpenAIEmbedder
) -> None:
    assert isinstance(embedder, Embedder)
    route = upstream.post("/embeddings").respond(
        json=answer([b64([3, 4, 0, 0]), b64([0, 0, 1, 0])], shuffle=True)
    )
    result = await embedder.embed(["a", "b"])
    assert route.call_count == 1
    assert sent(route) == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "base64",
    }
    assert result.vectors[0] == pytest.approx([0.6, 0.8, 0, 0])  # in input order, normalised
    assert result.vectors[1] == pytest.approx([0, 0, 1, 0])
    assert result.prompt_tokens == 7


async def test_an_upstream_that_answers_floats_and_no_usage_is_read_too(
    upstream: respx.MockRouter, embedder: OpenAIEmbedder
) -> None:
    upstream.post("/embeddings").respond(json=answer([[0, 2, 0, 0]], prompt_tokens=None))
    result = await embedder.embed(["hello world"])
    assert result.vectors == [pytest.approx([0, 1, 0, 0])]
    assert result.prompt_tokens == 2  # counted with cl100k


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (429, {"error": {"message": "slow down"}}, RateLimited, "upstream_rate_limited"),
        (401, {"error": {"message": "bad key sk-abcdef123456"}}, UpstreamError, "upstream_auth_failed"),
        (500, {"error": {"message": "boom"}}, UpstreamError, "upstream_error"),
        (400, {"error": {"message": "too long", "param": "input"}}, InvalidRequest, "upstream_bad_request"),
    ],
)
async def test_upstream_errors_become_the_services_own(
    upstream: respx.MockRouter,
    embedder: OpenAIEmbedder,
    status: int,
    body: dict[str, Any],
    error: type[Exception],
    code: str,
) -> None:
    upstream.post("/embeddings").respond(status, json=body)
    with pytest.raises(error) as caught:
        await embedder.embed(["a"])
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert "sk-abcdef" not in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        [b64([1, 0, 0])],  # three dimensions where the route says four
        ["not base64!"],
        [b64([1, 0, 0, 0]), b64([0, 1, 0, 0])],  # more vectors than inputs
    ],
)
async def test_unusable_vectors_are_a_bad_gateway(
    upstream: respx.MockRouter, embedder: OpenAIEmbedder, data: list[Any]
) -> None:
    upstream.post("/embeddings").respond(json=answer(data))
    with pytest.raises(UpstreamError) as caught:
        await embedder.embed(["a"])
    assert caught.value.code == "upstream_bad_response"


# -- through /v1/embeddings -------------------------------------------------------------------------


@pytest.fixture
async def client(upstream: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(openai_settings(embedding_models=UPSTREAM_MODELS))
    async with serving(app) as c:
        yield c


async def test_an_upstream_route_embeds_upstream_with_its_upstream_name(
    upstream: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = upstream.post("/embeddings").respond(json=answer([b64([1, 1, 1, 1])]))
    r = await client.post("/v1/embeddings", json={"model": "bge-m3", "input": "hi"})
    assert r.status_code == 200, r.text
    conforms("openai_embeddings_schemas.json", "CreateEmbeddingResponse", r.json())
    assert sent(route)["model"] == "BAAI/bge-m3"
    assert r.json()["model"] == "bge-m3"
    assert r.json()["data"][0]["embedding"] == pytest.approx([0.5] * 4)
    assert r.json()["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


async def test_dimensions_shorten_and_renormalise_where_the_route_allows(
    upstream: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    upstream.post("/embeddings").respond(json=answer([b64([3, 4, 12, 0])]))
    r = await client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi", "dimensions": 2}
    )
    assert r.status_code == 200, r.text
    (vector,) = [d["embedding"] for d in r.json()["data"]]
    assert vector == pytest.approx([0.6, 0.8], abs=1e-6)
    assert math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-6)
    r = await client.post("/v1/embeddings", json={"model": "bge-m3", "input": "hi", "dimensions": 2})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "dimensions"
    r = await client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi", "dimensions": 5}
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "dimensions"


async def test_an_upstream_failure_reaches_the_client_in_openais_shape(
    upstream: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    upstream.post("/embeddings").respond(
        429, json={"error": {"message": "slow down"}}, headers={"retry-after": "3"}
    )
    r = await client.post("/v1/embeddings", json={"model": "bge-m3", "input": "hi"})
    assert r.status_code == 429
    conforms("openai_embeddings_schemas.json", "ErrorResponse", r.json())
    assert r.json()["error"]["code"] == "upstream_rate_limited"
    assert r.headers["retry-after"] == "3"
