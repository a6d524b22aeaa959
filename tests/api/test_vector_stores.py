"""Vector stores as users reach them: the official SDK's `upload_and_poll` helpers ingest files
with the embedded multilingual embedder, search finds the right passage in English and Chinese
(keyword and vector rankings fused), filters narrow by attributes, bodies match OpenAI's
schemas, bad files fail with OpenAI's `last_error`, and one key never sees another's stores."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from tests.access_helpers import bearer, create_key, keys_app, running
from tests.openai_schemas import conforms

SCHEMAS = "openai_vector_stores_schemas.json"
POLL = 50  # ms between the SDK's polls

POLICIES = {
    "returns.md": "# Returns\nJackets and shoes may be returned within 30 days of delivery with the receipt. "
    "Refunds go back to the original card within 5 business days.",
    "shipping.md": "# Shipping\nStandard shipping takes 3 to 7 days. Express delivery arrives the next day "
    "for orders placed before noon.",
    "warranty-zh.txt": "保修政策：所有电子产品自购买之日起享受两年保修。人为损坏不在保修范围内。",
    "membership-zh.txt": "会员积分：每消费一元累积一分，积分可以在下次购物时抵扣现金。",
}


def sdk_for(client: httpx.AsyncClient, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.base_url).rstrip("/") + "/v1", api_key=secret, max_retries=0, http_client=client
    )


async def raw(client: httpx.AsyncClient, secret: str, path: str) -> Any:
    r = await client.get(path, headers=bearer(secret))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    app: FastAPI = keys_app(local_embed_threads=1, embedding_models={})
    async with running(app) as client:
        _, alice = await create_key(client, name="alice")
        _, bob = await create_key(client, name="bob")
        yield client, alice, bob


@pytest.fixture(scope="module")
async def shop(served: tuple[httpx.AsyncClient, str, str]) -> dict[str, Any]:
    """A store of the shop's four policies, ingested through file_batches.upload_and_poll."""
    client, alice, _ = served
    sdk = sdk_for(client, alice)
    store = await sdk.vector_stores.create(name="policies", metadata={"team": "support"})
    conforms(SCHEMAS, "VectorStoreObject", await raw(client, alice, f"/v1/vector_stores/{store.id}"))
    files = [(name, io.BytesIO(text.encode())) for name, text in POLICIES.items()]
    batch = await sdk.vector_stores.file_batches.upload_and_poll(store.id, files=files, poll_interval_ms=POLL)
    conforms(
        SCHEMAS,
        "VectorStoreFileBatchObject",
        await raw(client, alice, f"/v1/vector_stores/{store.id}/file_batches/{batch.id}"),
    )
    assert batch.status == "completed"
    assert batch.file_counts.completed == 4
    return {"store": store.id}


async def test_search_finds_the_passage_that_answers(
    served: tuple[httpx.AsyncClient, str, str], shop: dict[str, Any]
) -> None:
    client, alice, _ = served
    sdk = sdk_for(client, alice)
    for question, expected in (
        ("How long do I have to return a jacket?", "returns.md"),
        ("When does express delivery arrive?", "shipping.md"),
        ("电子产品保修多久？", "warranty-zh.txt"),
        ("积分怎么用", "membership-zh.txt"),
    ):
        page = await sdk.vector_stores.search(shop["store"], query=question, max_num_results=2)
        assert page.data[0].filename == expected, (question, [d.filename for d in page.data])
        assert 0 <= page.data[-1].score <= page.data[0].score <= 1
        assert page.data[0].content[0].text in POLICIES[expected]


async def test_the_store_reports_its_files_and_their_chunks(
    served: tuple[httpx.AsyncClient, str, str], shop: dict[str, Any]
) -> None:
    client, alice, _ = served
    sdk = sdk_for(client, alice)
    store = await sdk.vector_stores.retrieve(shop["store"])
    assert store.status == "completed"
    assert store.file_counts.completed == 4
    assert store.usage_bytes > 0
    files = [f async for f in sdk.vector_stores.files.list(shop["store"], limit=2)]
    assert len(files) == 4
    conforms(
        SCHEMAS,
        "VectorStoreFileObject",
        await raw(client, alice, f"/v1/vector_stores/{shop['store']}/files/{files[0].id}"),
    )
    searched = await client.post(
        f"/v1/vector_stores/{shop['store']}/search",
        json={"query": ["returns", "退货"]},
        headers=bearer(alice),
    )
    conforms(SCHEMAS, "VectorStoreSearchResultsPage", searched.json())
    assert searched.json()["search_query"] == ["returns", "退货"]
    content = await client.get(
        f"/v1/vector_stores/{shop['store']}/files/{files[0].id}/content", headers=bearer(alice)
    )
    conforms(SCHEMAS, "VectorStoreFileContentResponse", content.json())
    assert content.json()["data"][0]["text"] in POLICIES.values()


async def test_upload_and_poll_with_attributes_and_filters(
    served: tuple[httpx.AsyncClient, str, str],
) -> None:
    client, alice, _ = served
    sdk = sdk_for(client, alice)
    store = await sdk.vector_stores.create(name="by region")
    for region, text in (("eu", "Returns in the EU: 14 days."), ("us", "Returns in the US: 30 days.")):
        uploaded = await sdk.files.create(
            file=(f"{region}.txt", io.BytesIO(text.encode())), purpose="assistants"
        )
        await sdk.vector_stores.files.create_and_poll(
            file_id=uploaded.id,
            vector_store_id=store.id,
            attributes={"region": region},
            poll_interval_ms=POLL,
        )
    eu = await sdk.vector_stores.search(
        store.id, query="returns", filters={"type": "eq", "key": "region", "value": "eu"}
    )
    assert [d.attributes for d in eu.data] == [{"region": "eu"}]
    both = await sdk.vector_stores.search(
        store.id,
        query="returns",
        filters={
            "type": "or",
            "filters": [{"type": "eq", "key": "region", "value": v} for v in ("eu", "us")],
        },
    )
    assert len(both.data) == 2


async def test_a_bad_file_fails_with_a_reason_and_the_store_goes_on(
    served: tuple[httpx.AsyncClient, str, str],
) -> None:
    client, alice, _ = served
    sdk = sdk_for(client, alice)
    store = await sdk.vector_stores.create(name="mixed")
    elf = await sdk.vector_stores.files.upload_and_poll(
        vector_store_id=store.id,
        file=("report.pdf", io.BytesIO(b"\x7fELF\x02\x01\x01" + b"\x00" * 100)),
        poll_interval_ms=POLL,
    )
    assert elf.status == "failed"
    assert elf.last_error is not None
    assert elf.last_error.code == "unsupported_file"
    broken = await sdk.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("notes.json", io.BytesIO(b"{not json")), poll_interval_ms=POLL
    )
    assert broken.status == "failed"
    assert broken.last_error is not None
    assert broken.last_error.code == "invalid_file"
    good = await sdk.vector_stores.files.upload_and_poll(
        vector_store_id=store.id,
        file=("ok.txt", io.BytesIO(b"Opening hours: 9 to 5.")),
        poll_interval_ms=POLL,
    )
    assert good.status == "completed"
    counts = (await sdk.vector_stores.retrieve(store.id)).file_counts
    assert (counts.completed, counts.failed) == (1, 2)


async def test_another_key_gets_404_for_everything(
    served: tuple[httpx.AsyncClient, str, str], shop: dict[str, Any]
) -> None:
    client, _, bob = served
    thief = sdk_for(client, bob)
    with pytest.raises(openai.NotFoundError):
        await thief.vector_stores.retrieve(shop["store"])
    with pytest.raises(openai.NotFoundError):
        await thief.vector_stores.search(shop["store"], query="returns")
    with pytest.raises(openai.NotFoundError):
        await thief.vector_stores.files.list(shop["store"])
    with pytest.raises(openai.NotFoundError):
        await thief.vector_stores.delete(shop["store"])
    assert (await thief.vector_stores.list()).data == []


async def test_bad_requests_are_clear_4xx(
    served: tuple[httpx.AsyncClient, str, str], shop: dict[str, Any]
) -> None:
    client, alice, _ = served
    auth = bearer(alice)
    url = f"/v1/vector_stores/{shop['store']}"

    async def refused(r: httpx.Response, status: int, param: str | None) -> None:
        assert r.status_code == status, r.text[:300]
        conforms(SCHEMAS, "ErrorResponse", r.json())
        assert r.json()["error"]["param"] == param, r.json()

    await refused(
        await client.post(f"{url}/search", json={"query": "x", "max_num_results": 10000}, headers=auth),
        400,
        "max_num_results",
    )
    deep: dict[str, Any] = {"type": "eq", "key": "a", "value": 1}
    for _ in range(20):
        deep = {"type": "and", "filters": [deep]}
    await refused(
        await client.post(f"{url}/search", json={"query": "x", "filters": deep}, headers=auth), 400, "filters"
    )
    await refused(
        await client.post(
            f"{url}/files",
            json={"file_id": "file-x", "attributes": {str(i): i for i in range(10_000)}},
            headers=auth,
        ),
        400,
        "attributes",
    )
    await refused(
        await client.post(f"{url}/files", json={"file_id": "file-missing"}, headers=auth), 404, "file_ids[0]"
    )
    await refused(
        await client.post(
            "/v1/vector_stores",
            json={
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 80},
                },
                "file_ids": [],
            },
            headers=auth,
        ),
        400,
        "chunking_strategy.static.chunk_overlap_tokens",
    )


async def test_deleting_a_store_removes_its_chunks_not_its_files(
    served: tuple[httpx.AsyncClient, str, str],
) -> None:
    client, alice, _ = served
    sdk = sdk_for(client, alice)
    store = await sdk.vector_stores.create(name="temporary")
    attached = await sdk.vector_stores.files.upload_and_poll(
        vector_store_id=store.id,
        file=("t.txt", io.BytesIO(b"Temporary text about llamas.")),
        poll_interval_ms=POLL,
    )
    deleted = await sdk.vector_stores.delete(store.id)
    conforms(SCHEMAS, "DeleteVectorStoreResponse", deleted.model_dump())
    with pytest.raises(openai.NotFoundError):
        await sdk.vector_stores.search(store.id, query="llamas")
    assert (await sdk.files.retrieve(attached.id)).id == attached.id
