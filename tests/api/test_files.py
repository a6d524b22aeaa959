"""`/v1/files` as users reach it: the official SDK uploads, lists, pages, downloads and deletes;
bodies match OpenAI's schema; one key never sees another's files; bad uploads get clear 4xx;
an expired file is gone the moment it expires (an injected clock), on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from app.services.apps.files import display_name
from tests.access_helpers import ADMIN, bearer, create_key, keys_app, running
from tests.clock import ManualClock
from tests.openai_schemas import conforms

SCHEMAS = "openai_vector_stores_schemas.json"


def sdk_for(client: httpx.AsyncClient, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.base_url).rstrip("/") + "/v1", api_key=secret, max_retries=0, http_client=client
    )


@pytest.fixture
async def two_keys(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str, str, ManualClock]]:
    clocks = ManualClock()
    app: FastAPI = keys_app(database_url=database_url, clocks=clocks.clocks, files_max_bytes=4096)
    async with running(app) as client:
        _, alice = await create_key(client, name="alice")
        _, bob = await create_key(client, name="bob")
        yield client, alice, bob, clocks


async def test_the_sdk_uploads_lists_downloads_and_deletes(
    two_keys: tuple[httpx.AsyncClient, str, str, ManualClock],
) -> None:
    client, alice, _, clocks = two_keys
    sdk = sdk_for(client, alice)
    policy = "Returns are accepted within 30 days.\n退货须在三十天内办理。\n".encode()
    created = await sdk.files.create(file=("returns-policy.txt", io.BytesIO(policy)), purpose="assistants")
    assert created.id.startswith("file-")
    assert created.bytes == len(policy)
    assert created.filename == "returns-policy.txt"
    assert created.purpose == "assistants"
    conforms(SCHEMAS, "OpenAIFile", created.model_dump(exclude_none=True))

    assert (await sdk.files.retrieve(created.id)).id == created.id
    assert (await sdk.files.content(created.id)).read() == policy
    clocks.advance(0.001)
    batch = await sdk.files.create(file=("lines.jsonl", io.BytesIO(b'{"a": 1}\n')), purpose="batch")
    page = await sdk.files.list()
    conforms(SCHEMAS, "ListFilesResponse", page.model_dump(exclude_none=True))
    assert [f.id for f in page.data] == [batch.id, created.id]  # newest first
    assert [f.id for f in (await sdk.files.list(purpose="batch")).data] == [batch.id]

    deleted = await sdk.files.delete(created.id)
    conforms(SCHEMAS, "DeleteFileResponse", deleted.model_dump())
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.files.content(created.id)


async def test_pages_follow_the_cursor_in_both_orders(
    two_keys: tuple[httpx.AsyncClient, str, str, ManualClock],
) -> None:
    client, alice, _, clocks = two_keys
    sdk = sdk_for(client, alice)
    ids = []
    for n in range(5):
        ids.append((await sdk.files.create(file=(f"f{n}.txt", io.BytesIO(b"x")), purpose="user_data")).id)
        clocks.advance(1)
    seen = [f.id async for f in sdk.files.list(limit=2, order="asc")]  # the SDK follows `after`
    assert seen == ids
    first = await sdk.files.list(limit=2)
    assert first.has_more
    assert [f.id for f in first.data] == ids[::-1][:2]


async def test_another_key_never_sees_a_file_but_the_admin_api_does(
    two_keys: tuple[httpx.AsyncClient, str, str, ManualClock],
) -> None:
    client, alice, bob, _ = two_keys
    created = await sdk_for(client, alice).files.create(
        file=("a.txt", io.BytesIO(b"secret")), purpose="assistants"
    )
    thief = sdk_for(client, bob)
    for attempt in (thief.files.retrieve, thief.files.content, thief.files.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            await attempt(created.id)
        assert caught.value.body["code"] == "file_not_found"  # type: ignore[index]
    assert (await thief.files.list()).data == []
    listed = await client.get("/admin/files", headers=ADMIN)
    assert listed.status_code == 200
    assert [f["id"] for f in listed.json()["data"]] == [created.id]
    assert listed.json()["data"][0]["owner"]  # the admin sees whose it is
    assert (await client.get(f"/v1/files/{created.id}", headers=bearer(alice))).status_code == 200


async def test_an_expired_file_is_gone_at_once_and_swept_later(
    two_keys: tuple[httpx.AsyncClient, str, str, ManualClock],
) -> None:
    client, alice, _, clocks = two_keys
    sdk = sdk_for(client, alice)
    created = await sdk.files.create(
        file=("a.txt", io.BytesIO(b"short-lived")),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert created.expires_at == created.created_at + 3600
    clocks.advance(3599)
    assert (await sdk.files.retrieve(created.id)).id == created.id
    clocks.advance(1)
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(created.id)
    assert (await sdk.files.list()).data == []
    files = client._transport.app.state.genserve.files  # type: ignore[attr-defined]
    assert await files.delete_expired(clocks.clocks.unix(), limit=100) == 1
    assert await files.delete_expired(clocks.clocks.unix(), limit=100) == 0


def refused(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text[:300]
    body = r.json()
    conforms(SCHEMAS, "ErrorResponse", body)
    assert body["error"]["param"] == param, body
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bad_uploads_are_clear_4xx(two_keys: tuple[httpx.AsyncClient, str, str, ManualClock]) -> None:
    client, alice, _, _ = two_keys
    auth = bearer(alice)

    async def upload(content: bytes, **data: Any) -> httpx.Response:
        return await client.post("/v1/files", files={"file": ("x.txt", content)}, data=data, headers=auth)

    refused(await upload(b"x" * 5000, purpose="assistants"), 413, "file")
    beyond = await upload(b"x" * 80_000, purpose="assistants")  # beyond the envelope: refused unread
    assert beyond.status_code == 413
    assert beyond.json()["error"]["code"] == "payload_too_large"
    refused(await upload(b"", purpose="assistants"), 400, "file")
    assert "'batch'" in refused(await upload(b"x", purpose="batch_output"), 400, "purpose")["message"]
    refused(await upload(b"x", purpose="nonsense"), 400, "purpose")
    refused(
        await upload(b"x", purpose="user_data", **{"expires_after[seconds]": "60"}),
        400,
        "expires_after.seconds",
    )
    refused(
        await upload(b"x", purpose="user_data", **{"expires_after[anchor]": "now"}),
        400,
        "expires_after.anchor",
    )
    missing = await client.post("/v1/files", data={"purpose": "assistants"}, headers=auth)
    assert missing.status_code == 400, missing.text
    assert missing.json()["error"]["param"] == "file"
    refused(await client.get("/v1/files/file-nope", headers=auth), 404, "file_id")
    refused(await client.get("/v1/files?after=file-nope", headers=auth), 404, "after")
    assert (await client.get("/v1/files", headers={})).status_code == 401


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_name_is_shown_back_never_trusted(
    two_keys: tuple[httpx.AsyncClient, str, str, ManualClock],
) -> None:
    client, alice, _, _ = two_keys
    r = await client.post(
        "/v1/files",
        files={"file": ("../../etc/passwd.html", b"<script>alert(1)</script>", "text/html")},
        data={"purpose": "assistants"},
        headers=bearer(alice),
    )
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "passwd.html"
    content = await client.get(f"/v1/files/{r.json()['id']}/content", headers=bearer(alice))
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.headers["x-content-type-options"] == "nosniff"


def test_display_names_lose_paths_and_control_characters() -> None:
    assert display_name("C:\\Users\\me\\policy.pdf") == "policy.pdf"
    assert display_name("a\x00b\x1b[31m.txt") == "ab[31m.txt"
    assert display_name("") == display_name(None) == "upload"
    assert len(display_name("x" * 1000)) == 255
