"""`/v1/batches` as users reach it: the official SDK uploads a file of requests, creates a batch,
follows it to `completed` and downloads the output and error files, each line in OpenAI's shape
with the body the endpoint itself returns; bad files fail the batch with `errors.data`; a bad line
gets the endpoint's own 400 and the batch goes on; cancel, expiry, a revoked key and another key's
file behave as a user would expect. On SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import respx
from fastapi import FastAPI

from app.state import AppState
from tests.access_helpers import ADMIN, completion, create_key, keys_app, running
from tests.clock import ManualClock
from tests.openai_schemas import conforms
from tests.waiting import eventually

SCHEMAS = "openai_batches_schemas.json"


def sdk_for(client: httpx.AsyncClient, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.base_url).rstrip("/") + "/v1", api_key=secret, max_retries=0, http_client=client
    )


def line(custom_id: str, text: str, url: str = "/v1/chat/completions", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(*items: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def echo(request: httpx.Request) -> httpx.Response:
    """The fake upstream answers each request with its own question."""
    asked = json.loads(request.content)["messages"][-1]["content"]
    return httpx.Response(200, json=completion(f"re: {asked}", prompt_tokens=7, completion_tokens=3))


class Env:
    def __init__(self, client: httpx.AsyncClient, app: FastAPI, clocks: ManualClock) -> None:
        self.client, self.app, self.clocks = client, app, clocks
        self.alice = self.bob = ""
        self.alice_id = ""

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.genserve
        return state

    async def upload(self, secret: str, content: bytes, purpose: str = "batch") -> str:
        sdk = sdk_for(self.client, secret)
        return (await sdk.files.create(file=("lines.jsonl", io.BytesIO(content)), purpose=purpose)).id  # type: ignore[arg-type]

    async def drain(self) -> None:
        """Run the worker by hand until nothing is due (this app's own worker is off)."""
        while await self.state.batches.run_one():
            pass


@pytest.fixture
async def env(database_url: str, upstream: respx.MockRouter) -> AsyncIterator[Env]:
    upstream.post("/chat/completions").mock(side_effect=echo)
    clocks = ManualClock()
    app = keys_app(database_url=database_url, clocks=clocks.clocks, batch_worker=False)
    async with running(app) as client:
        e = Env(client, app, clocks)
        e.alice_id, e.alice = await create_key(client, name="alice")
        _, e.bob = await create_key(client, name="bob")
        yield e


async def output_lines(sdk: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    text = (await sdk.files.content(file_id)).read().decode()
    return [json.loads(row) for row in text.splitlines()]


async def test_the_sdk_runs_a_chat_batch_to_completion(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    lines = [line(f"q{n}", f"question {n}") for n in range(3)]
    lines.append(line("bad", "too hot", temperature=5))  # the route's own 400, in the error file
    file_id = await env.upload(env.alice, jsonl(*lines))
    created = await sdk.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert created.status == "validating"
    conforms(SCHEMAS, "Batch", created.model_dump(exclude_none=True))
    await env.drain()

    done = await sdk.batches.retrieve(created.id)
    conforms(SCHEMAS, "Batch", done.model_dump(exclude_none=True))
    assert done.status == "completed"
    assert done.metadata == {"job": "nightly"}
    assert done.model == "gpt-4o-mini"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 3, 1)
    assert done.in_progress_at
    assert done.finalizing_at
    assert done.completed_at
    assert done.expires_at
    assert done.usage is not None
    assert done.usage.input_tokens == 21
    assert done.usage.output_tokens == 9

    results = await output_lines(sdk, done.output_file_id)
    assert [r["custom_id"] for r in results] == ["q0", "q1", "q2"]
    for n, result in enumerate(results):
        assert result["id"].startswith("batch_req_")
        assert result["error"] is None
        assert result["response"]["status_code"] == 200
        body = result["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == f"re: question {n}"
    (failed,) = await output_lines(sdk, done.error_file_id)
    assert failed["custom_id"] == "bad"
    assert failed["response"]["status_code"] == 400
    direct = await env.client.post(
        "/v1/chat/completions", json=lines[3]["body"], headers={"authorization": f"Bearer {env.alice}"}
    )
    assert failed["response"]["body"] == direct.json()  # exactly what the endpoint says alone

    output = await sdk.files.retrieve(done.output_file_id or "")
    assert output.purpose == "batch_output"
    page = await sdk.batches.list()
    conforms(SCHEMAS, "ListBatchesResponse", page.model_dump(exclude_none=True))
    assert [b.id for b in page.data] == [created.id]


async def test_the_batch_worker_of_the_app_runs_batches_by_itself(
    database_url: str, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(side_effect=echo)
    async with running(keys_app(database_url=database_url)) as client:
        _, secret = await create_key(client, name="carol")
        sdk = sdk_for(client, secret)
        uploaded = await sdk.files.create(
            file=("in.jsonl", io.BytesIO(jsonl(line("only", "hello")))), purpose="batch"
        )
        batch = await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )

        async def finished() -> bool:
            return (await sdk.batches.retrieve(batch.id)).status == "completed"

        await eventually(finished)


async def test_another_keys_file_and_batch_are_not_found(env: Env) -> None:
    alice, bob = sdk_for(env.client, env.alice), sdk_for(env.client, env.bob)
    file_id = await env.upload(env.alice, jsonl(line("a", "hi")))
    with pytest.raises(openai.NotFoundError):
        await bob.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    batch = await alice.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with pytest.raises(openai.NotFoundError):
        await bob.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        await bob.batches.cancel(batch.id)
    assert (await bob.batches.list()).data == []


async def test_bad_create_requests_get_clear_400s(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    not_batch = await env.upload(env.alice, jsonl(line("a", "hi")), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as wrong_purpose:
        await sdk.batches.create(
            input_file_id=not_batch, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert wrong_purpose.value.body["param"] == "input_file_id"  # type: ignore[index]
    batch_file = await env.upload(env.alice, jsonl(line("a", "hi")))
    for body, param in (
        ({"endpoint": "/v1/moderations", "completion_window": "24h"}, "endpoint"),
        ({"endpoint": "/v1/chat/completions", "completion_window": "1h"}, "completion_window"),
    ):
        r = await env.client.post(
            "/v1/batches",
            json={"input_file_id": batch_file, **body},
            headers={"authorization": f"Bearer {env.alice}"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param


async def test_a_malformed_file_fails_the_batch_with_each_problem_and_its_line(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    content = b"".join(
        [
            jsonl(line("ok", "fine")),
            b"{not json\n",
            jsonl(line("elsewhere", "hi", url="/v1/completions")),
            jsonl(line("ok", "again")),
            b'{"custom_id": "latin", "method": "POST", "url": "/v1/chat/completions", '
            b'"body": {"x": "\xff"}}\n',
            jsonl({**line("get", "hi"), "method": "GET"}),
        ]
    )
    file_id = await env.upload(env.alice, content)
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await env.drain()
    failed = await sdk.batches.retrieve(batch.id)
    conforms(SCHEMAS, "Batch", failed.model_dump(exclude_none=True))
    assert failed.status == "failed"
    assert failed.failed_at
    assert failed.errors is not None
    assert failed.errors.data is not None
    assert [(e.code, e.line) for e in failed.errors.data] == [
        ("invalid_json_line", 2),
        ("invalid_url", 3),
        ("duplicate_custom_id", 4),
        ("invalid_json_line", 5),
        ("invalid_method", 6),
    ]
    assert failed.output_file_id is None


async def test_more_lines_than_openais_limit_fail_the_batch(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    file_id = await env.upload(env.alice, b"{}\n" * 50_001)
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await env.drain()
    failed = await sdk.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.errors
    assert failed.errors.data
    assert failed.errors.data[0].code == "too_many_requests"


async def test_a_line_larger_than_the_endpoint_accepts_fails_the_batch(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    huge = line("huge", "x" * (env.state.settings.max_body_bytes + 10))
    file_id = await env.upload(env.alice, jsonl(line("small", "hi"), huge))
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await env.drain()
    failed = await sdk.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.errors
    assert failed.errors.data
    assert (failed.errors.data[0].code, failed.errors.data[0].line) == ("line_too_large", 2)


async def test_cancel_keeps_what_ran_and_a_finished_batch_cannot_be_cancelled(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    file_id = await env.upload(env.alice, jsonl(*(line(f"q{n}", f"n{n}") for n in range(40))))
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await env.state.batches.run_one()  # validated
    await env.state.batches.run_one()  # one slice ran... then the user cancels
    running_batch = await sdk.batches.retrieve(batch.id)
    assert running_batch.status == "in_progress"
    assert running_batch.request_counts
    assert running_batch.request_counts.completed == 32  # a slice: 4 x the concurrency
    assert (await sdk.batches.cancel(batch.id)).status == "cancelling"
    await env.drain()
    cancelled = await sdk.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled"
    assert cancelled.cancelling_at
    assert cancelled.cancelled_at
    assert cancelled.request_counts
    assert cancelled.request_counts.completed == 32
    assert [r["custom_id"] for r in await output_lines(sdk, cancelled.output_file_id)] == [
        f"q{n}" for n in range(32)
    ]
    with pytest.raises(openai.ConflictError):
        await sdk.batches.cancel(batch.id)

    done_file = await env.upload(env.alice, jsonl(line("a", "hi")))
    done = await sdk.batches.create(
        input_file_id=done_file, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await env.drain()
    with pytest.raises(openai.ConflictError):
        await sdk.batches.cancel(done.id)


async def test_a_batch_cancelled_before_it_runs_runs_nothing(env: Env, upstream: respx.MockRouter) -> None:
    sdk = sdk_for(env.client, env.alice)
    file_id = await env.upload(env.alice, jsonl(line("a", "hi"), line("b", "ho")))
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    calls = upstream.calls.call_count
    assert (await sdk.batches.cancel(batch.id)).status == "cancelling"
    await env.drain()
    cancelled = await sdk.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled"
    assert cancelled.output_file_id is None
    assert upstream.calls.call_count == calls


async def test_a_batch_past_its_window_expires_with_the_unrun_lines_in_the_error_file(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    file_id = await env.upload(env.alice, jsonl(line("late", "hi")))
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    env.clocks.advance(25 * 3600)
    await env.drain()
    expired = await sdk.batches.retrieve(batch.id)
    assert expired.status == "expired"
    assert expired.expired_at
    (row,) = await output_lines(sdk, expired.error_file_id)
    assert row["custom_id"] == "late"
    assert row["error"]["code"] == "batch_expired"


async def test_a_revoked_key_fails_the_remaining_lines(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    file_id = await env.upload(env.alice, jsonl(line("a", "hi"), line("b", "ho")))
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    r = await env.client.delete(f"/admin/keys/{env.alice_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    await env.drain()
    async with env.state.db.session():
        view = await env.state.batches.get(None, batch.id)
    assert view.status == "completed"
    assert (view.completed, view.failed) == (0, 2)
    content = await env.state.files.content(None, view.error_file_id or "")
    codes = {json.loads(row)["response"]["status_code"] for row in content.splitlines()}
    assert codes == {401}


async def test_output_files_expire_as_asked(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    file_id = await env.upload(env.alice, jsonl(line("a", "hi")))
    batch = await sdk.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={"output_expires_after": {"anchor": "created_at", "seconds": 3600}},
    )
    await env.drain()
    done = await sdk.batches.retrieve(batch.id)
    output = await sdk.files.retrieve(done.output_file_id or "")
    assert output.expires_at is not None
    assert output.expires_at - output.created_at == 3600


async def test_an_upstream_429_is_waited_out_without_failing_lines(
    env: Env, upstream: respx.MockRouter
) -> None:
    limited = httpx.Response(
        429,
        headers={"retry-after": "0"},
        json={"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}},
    )
    answers = iter([limited, limited])

    def flaky(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or echo(request)

    upstream.post("/chat/completions").mock(side_effect=flaky)
    sdk = sdk_for(env.client, env.alice)
    file_id = await env.upload(env.alice, jsonl(line("a", "hi"), line("b", "ho")))
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await env.drain()
    done = await sdk.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts
    if done.error_file_id:
        print(await output_lines(sdk, done.error_file_id))
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 0)
    assert done.error_file_id is None


async def test_a_budget_that_runs_out_halfway_fails_the_remaining_lines_with_its_429(env: Env) -> None:
    _, secret = await create_key(env.client, name="thrifty", limits={"tokens_per_day": 25})
    sdk = sdk_for(env.client, secret)
    file_id = await env.upload(secret, jsonl(*(line(f"q{n}", f"n{n}", max_tokens=3) for n in range(6))))
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await env.drain()
    done = await sdk.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts
    assert done.request_counts.completed >= 1
    assert done.request_counts.failed >= 1
    assert done.request_counts.completed + done.request_counts.failed == 6
    failures = await output_lines(sdk, done.error_file_id)
    assert {f["response"]["status_code"] for f in failures} == {429}
    assert all(f["response"]["body"]["error"]["type"] == "rate_limit_error" for f in failures)


async def test_responses_lines_answer_as_the_responses_endpoint_does(env: Env) -> None:
    sdk = sdk_for(env.client, env.alice)
    request = {"custom_id": "r1", "method": "POST", "url": "/v1/responses"}
    body = {"model": "gpt-4o-mini", "input": "say hi", "store": False}
    file_id = await env.upload(
        env.alice, jsonl({**request, "body": body}, {**request, "custom_id": "r2", "body": {}})
    )
    batch = await sdk.batches.create(input_file_id=file_id, endpoint="/v1/responses", completion_window="24h")
    await env.drain()
    done = await sdk.batches.retrieve(batch.id)
    assert done.status == "completed"
    (ok,) = await output_lines(sdk, done.output_file_id)
    assert ok["custom_id"] == "r1"
    assert ok["response"]["body"]["object"] == "response"
    (bad,) = await output_lines(sdk, done.error_file_id)
    direct = await env.client.post("/v1/responses", json={}, headers={"authorization": f"Bearer {env.alice}"})
    assert bad["response"]["status_code"] == direct.status_code == 400
    assert bad["response"]["body"] == direct.json()
