"""Persistent conversations: stored turns, a history that fits the window, one reply at a time.

Every test runs on SQLite and on the real PostgreSQL (`database_url`); the model is a mocked
OpenAI upstream that answers "echo: <the last user message>" and records what it was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx
from fastapi import FastAPI

from app.main import create_app
from app.settings import ModelRoute
from tests.conftest import openai_settings, serving

SYSTEM = "You are the support agent of Acme Anvils. Be brief."


class Upstream:
    """A mocked OpenAI-compatible upstream: echoes the last user message, records requests."""

    def __init__(self, router: respx.MockRouter, *, delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.delay = delay
        self.fail = False
        self.chunk_delay = 0.0
        router.post("/chat/completions").mock(side_effect=self._handle)

    def sent(self, index: int = -1) -> list[dict[str, str]]:
        """The messages of one recorded request."""
        return [{"role": m["role"], "content": m["content"]} for m in self.requests[index]["messages"]]

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            return httpx.Response(500, json={"error": {"message": "boom", "type": "server_error"}})
        text = f"echo: {body['messages'][-1]['content']}"
        if body.get("stream"):
            return httpx.Response(200, content=self._sse(text), headers={"content-type": "text/event-stream"})
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
            },
        )

    async def _sse(self, text: str) -> AsyncIterator[bytes]:
        head = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        for word in text.split(" "):
            delta = {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
            yield b"data: " + orjson.dumps({**head, "choices": [delta]}) + b"\n\n"
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        end = {"index": 0, "delta": {}, "finish_reason": "stop"}
        yield b"data: " + orjson.dumps({**head, "choices": [end]}) + b"\n\n"
        usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"


@pytest.fixture
def mock(upstream: respx.MockRouter) -> Upstream:
    return Upstream(upstream)


async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app, timeout=30) as client:
        yield client


def conversation_app(database_url: str, **overrides: object) -> FastAPI:
    return create_app(openai_settings(database_url=database_url, **overrides))


@pytest.fixture
async def client(database_url: str, mock: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async for c in running(conversation_app(database_url)):
        yield c


async def new_conversation(client: httpx.AsyncClient, **body: object) -> str:
    r = await client.post("/v1/conversations", json={"system": SYSTEM, **body})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def say(
    client: httpx.AsyncClient, conversation_id: str, content: str, **more: object
) -> dict[str, Any]:
    r = await client.post(f"/v1/conversations/{conversation_id}/messages", json={"content": content, **more})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def history(client: httpx.AsyncClient, conversation_id: str, **params: object) -> dict[str, Any]:
    r = await client.get(f"/v1/conversations/{conversation_id}", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def turns(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in page["messages"]]


def assert_not_found(r: httpx.Response) -> None:
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["type"] == "not_found_error"
    assert set(error) == {"message", "type", "param", "code"}


# -- the conversation resource ---------------------------------------------------------------


async def test_create_returns_the_settings(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/conversations",
        json={
            "system": SYSTEM,
            "model": "gpt-4o",
            "sampling": {"temperature": 0.2},
            "metadata": {"customer": "c-42"},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("conv_")
    assert body["object"] == "conversation"
    assert body["model"] == "gpt-4o"
    assert body["system"] == SYSTEM
    assert body["sampling"] == {"temperature": 0.2}
    assert body["metadata"] == {"customer": "c-42"}
    assert body["message_count"] == 0
    page = await history(client, body["id"])
    assert page["messages"] == []
    assert page["metadata"] == {"customer": "c-42"}


async def test_the_default_model_is_recorded(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/conversations", json={})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "gpt-4o-mini"
    assert r.json()["system"] is None


async def test_an_unknown_model_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/conversations", json={"model": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["param"] == "model"


async def test_a_reply_keeps_one_choice(client: httpx.AsyncClient) -> None:
    conversation = await new_conversation(client)
    r = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "hi", "n": 2})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "n"
    r = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "  "})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "content"


async def test_unknown_ids_are_404_in_openai_shape(client: httpx.AsyncClient) -> None:
    assert_not_found(await client.get("/v1/conversations/conv_missing"))
    assert_not_found(await client.delete("/v1/conversations/conv_missing"))
    assert_not_found(await client.post("/v1/conversations/conv_missing/messages", json={"content": "hi"}))
    assert_not_found(await client.get("/v1/conversations", params={"after": "conv_missing"}))


async def test_delete_then_404(client: httpx.AsyncClient, mock: Upstream) -> None:
    conversation = await new_conversation(client)
    await say(client, conversation, "hello")
    r = await client.delete(f"/v1/conversations/{conversation}")
    assert r.status_code == 200
    assert r.json() == {"id": conversation, "object": "conversation.deleted", "deleted": True}
    assert_not_found(await client.get(f"/v1/conversations/{conversation}"))
    assert_not_found(await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "x"}))
    assert_not_found(await client.delete(f"/v1/conversations/{conversation}"))
    listed = (await client.get("/v1/conversations")).json()["data"]
    assert conversation not in [c["id"] for c in listed]


async def test_list_is_newest_first_and_pages_with_after(client: httpx.AsyncClient) -> None:
    created = [await new_conversation(client, metadata={"n": str(i)}) for i in range(5)]
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 2}
        if after:
            params["after"] = after
        r = await client.get("/v1/conversations", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        seen += [c["id"] for c in page["data"]]
        assert page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == list(reversed(created))
    assert pages == 3
    r = await client.get("/v1/conversations", params={"limit": 0})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "limit"


# -- messages --------------------------------------------------------------------------------


async def test_a_reply_has_generate_metadata_and_both_turns_are_stored(
    client: httpx.AsyncClient, mock: Upstream
) -> None:
    conversation = await new_conversation(client, sampling={"temperature": 0.3})
    first = await say(client, conversation, "My anvil arrived cracked.", seed=7)
    assert first["object"] == "generation"
    assert first["text"] == "echo: My anvil arrived cracked."
    assert first["provider"] == "openai"
    assert first["model"] == "gpt-4o-mini"
    assert first["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    assert first["sampling"]["temperature"] == 0.3  # the conversation's default
    assert first["sampling"]["seed"] == 7  # the message's own setting
    assert set(first["timings"]) == {"ttft_ms", "total_ms"}
    assert first["conversation_id"] == conversation
    assert first["turn"] == 2
    assert first["metadata"]["turns_dropped"] == 0
    assert first["metadata"]["turns_in_context"] == 0

    second = await say(client, conversation, "Can I get a new one?", temperature=1.0)
    assert second["sampling"]["temperature"] == 1.0
    assert second["turn"] == 4
    assert second["metadata"]["turns_in_context"] == 2
    # The model saw the system prompt, the first exchange, and the new message.
    assert mock.sent() == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "My anvil arrived cracked."},
        {"role": "assistant", "content": "echo: My anvil arrived cracked."},
        {"role": "user", "content": "Can I get a new one?"},
    ]
    page = await history(client, conversation)
    assert page["message_count"] == 4
    assert turns(page) == [
        ("user", "My anvil arrived cracked."),
        ("assistant", "echo: My anvil arrived cracked."),
        ("user", "Can I get a new one?"),
        ("assistant", "echo: Can I get a new one?"),
    ]
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4]
    reply = page["messages"][1]
    assert reply["generation_id"] == first["id"]
    assert reply["finish_reason"] == "stop"
    assert reply["interrupted"] is False
    assert reply["usage"]["total_tokens"] == 14


async def test_history_pages_back_with_before(client: httpx.AsyncClient) -> None:
    conversation = await new_conversation(client)
    for i in range(3):
        await say(client, conversation, f"question {i}")
    newest = await history(client, conversation, limit=4)
    assert [m["seq"] for m in newest["messages"]] == [3, 4, 5, 6]
    assert newest["has_more"] is True
    older = await history(client, conversation, limit=4, before=newest["messages"][0]["seq"])
    assert [m["seq"] for m in older["messages"]] == [1, 2]
    assert older["has_more"] is False
    assert turns(older) == [("user", "question 0"), ("assistant", "echo: question 0")]


async def test_a_failed_reply_stores_nothing(client: httpx.AsyncClient, mock: Upstream) -> None:
    conversation = await new_conversation(client)
    await say(client, conversation, "first")
    mock.fail = True
    r = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "lost"})
    assert r.status_code == 502
    page = await history(client, conversation)
    assert page["message_count"] == 2
    assert turns(page) == [("user", "first"), ("assistant", "echo: first")]
    mock.fail = False
    again = await say(client, conversation, "lost")
    assert again["turn"] == 4


async def test_a_streamed_reply_is_stored_when_it_ends(client: httpx.AsyncClient) -> None:
    conversation = await new_conversation(client)
    await say(client, conversation, "hello")
    r = await client.post(
        f"/v1/conversations/{conversation}/messages", json={"content": "where is my order", "stream": True}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [line.removeprefix("data: ") for line in r.text.split("\n\n") if line]
    assert frames[-1] == "[DONE]"
    events = [json.loads(f) for f in frames[:-1]]
    deltas = [e for e in events if e["object"] == "generation.chunk"]
    final = events[-1]
    assert len(deltas) >= 2
    assert final["object"] == "generation"
    assert all(d["id"] == final["id"] for d in deltas)
    assert "".join(d["text"] for d in deltas) == final["text"]
    assert final["text"].strip() == "echo: where is my order"
    assert final["conversation_id"] == conversation
    assert final["turn"] == 4
    assert final["metadata"]["turns_in_context"] == 2
    page = await history(client, conversation)
    assert turns(page)[-2:] == [("user", "where is my order"), ("assistant", final["text"])]
    assert page["messages"][-1]["generation_id"] == final["id"]


async def test_a_streamed_failure_stores_nothing(client: httpx.AsyncClient, mock: Upstream) -> None:
    conversation = await new_conversation(client)
    mock.fail = True
    r = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "x", "stream": True})
    assert r.status_code == 502
    assert (await history(client, conversation))["message_count"] == 0


async def test_a_client_gone_mid_stream_keeps_what_it_was_shown(database_url: str, mock: Upstream) -> None:
    mock.chunk_delay = 0.2
    app = conversation_app(database_url)
    async with serving(app) as client:
        conversation = await new_conversation(client)
        shown = await stream_then_leave(
            app,
            f"/v1/conversations/{conversation}/messages",
            {"content": "one two three four five six seven eight", "stream": True},
            after=2,
        )
        assert len(shown) == 2
        page = await history(client, conversation)
        for _ in range(50):  # the turn is stored as the stream unwinds
            if page["message_count"]:
                break
            await asyncio.sleep(0.05)
            page = await history(client, conversation)
        assert page["message_count"] == 2
        reply = page["messages"][1]
        assert reply["interrupted"] is True
        assert reply["content"].startswith("".join(shown))
        assert reply["content"] != "echo: one two three four five six seven eight "
        # The next reply is generated with what the user saw.
        mock.chunk_delay = 0
        await say(client, conversation, "hello?")
        assert mock.sent()[-2] == {"role": "assistant", "content": reply["content"]}


async def stream_then_leave(app: FastAPI, path: str, body: dict[str, Any], *, after: int) -> list[str]:
    """Drive the ASGI app directly: read `after` text deltas, then disconnect."""
    left = asyncio.Event()
    request_sent = False
    shown: list[str] = []

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body" or left.is_set():
            return
        for frame in message.get("body", b"").decode().split("\n\n"):
            if frame.startswith("data: {"):
                event = json.loads(frame.removeprefix("data: "))
                if event["object"] == "generation.chunk":
                    shown.append(event["text"])
        if len(shown) >= after:
            left.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("t", 80),
    }
    await app(scope, receive, send)
    return shown


# -- the context window ----------------------------------------------------------------------


def small_window(database_url: str) -> FastAPI:
    route = ModelRoute(
        provider="openai", upstream_model="gpt-4o-mini", context_window=300, max_output_tokens=64
    )
    return conversation_app(database_url, models={"small": route})


async def test_history_keeps_the_system_prompt_and_the_newest_turns(
    database_url: str, mock: Upstream
) -> None:
    async for client in running(small_window(database_url)):
        conversation = await new_conversation(client, sampling={"max_tokens": 32})
        dropped_seen = 0
        for i in range(12):
            content = f"Message {i}: " + "my order of anvils has not arrived yet " * 3
            reply = await say(client, conversation, content)
            sent = mock.sent()
            # Always: the system prompt first, the new message last, and a suffix of the history.
            assert sent[0] == {"role": "system", "content": SYSTEM}
            assert sent[-1] == {"role": "user", "content": content}
            stored = turns(await history(client, conversation, limit=100))[:-2]
            kept = [(m["role"], m["content"]) for m in sent[1:-1]]
            assert kept == stored[len(stored) - len(kept) :]
            assert not kept or kept[0][0] == "user"
            meta = reply["metadata"]
            assert meta["turns_in_context"] == len(kept)
            assert meta["turns_dropped"] == len(stored) - len(kept)
            dropped_seen = max(dropped_seen, meta["turns_dropped"])
        assert dropped_seen > 0


async def test_a_message_too_large_for_the_window_is_refused(database_url: str, mock: Upstream) -> None:
    async for client in running(small_window(database_url)):
        conversation = await new_conversation(client)
        r = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "anvil " * 400})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "content"
        assert error["code"] == "context_length_exceeded"
        assert mock.requests == []
        assert (await history(client, conversation))["message_count"] == 0
        # A system prompt that leaves no room for a conversation is refused when it is set.
        r = await client.post("/v1/conversations", json={"system": "rules " * 400})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "system"


# -- one reply at a time ---------------------------------------------------------------------


async def upstream_called(mock: Upstream, times: int) -> None:
    for _ in range(200):
        if len(mock.requests) >= times:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the upstream was not called")


def assert_paired(page: dict[str, Any], questions: set[str]) -> None:
    """Every question is stored once, followed directly by its own answer."""
    pairs = turns(page)
    assert len(pairs) == 2 * len(questions)
    asked = set()
    for (role_q, question), (role_a, answer) in zip(pairs[::2], pairs[1::2], strict=True):
        assert (role_q, role_a) == ("user", "assistant")
        assert answer == f"echo: {question}"
        asked.add(question)
    assert asked == questions


async def test_concurrent_messages_take_turns(client: httpx.AsyncClient, mock: Upstream) -> None:
    mock.delay = 0.2
    conversation = await new_conversation(client)
    questions = [f"question {i}" for i in range(4)]
    replies = await asyncio.gather(*(say(client, conversation, q) for q in questions))
    assert sorted(r["turn"] for r in replies) == [2, 4, 6, 8]
    page = await history(client, conversation)
    assert_paired(page, set(questions))
    # Each reply was generated from the complete history before it: nothing interleaved.
    for reply in replies:
        assert reply["metadata"]["turns_in_context"] == reply["turn"] - 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_conversation_continues_on_another_replica(database_url: str, mock: Upstream) -> None:
    """Two app instances on one PostgreSQL database: either can continue, and concurrent
    messages sent to different replicas still take turns."""
    mock.delay = 0.2
    one = running(conversation_app(database_url))
    two = running(conversation_app(database_url))
    a = await anext(one)
    b = await anext(two)
    try:
        conversation = await new_conversation(a)
        await say(a, conversation, "started on one")
        reply = await say(b, conversation, "continued on two")
        assert reply["metadata"]["turns_in_context"] == 2
        assert mock.sent()[1:3] == [
            {"role": "user", "content": "started on one"},
            {"role": "assistant", "content": "echo: started on one"},
        ]
        questions = ["to one", "to two", "to one again", "to two again"]
        clients = [a, b, a, b]
        replies = await asyncio.gather(
            *(say(c, conversation, q) for c, q in zip(clients, questions, strict=True))
        )
        assert sorted(r["turn"] for r in replies) == [6, 8, 10, 12]
        for r in replies:
            assert r["metadata"]["turns_in_context"] == r["turn"] - 2
        assert_paired(await history(b, conversation), {"started on one", "continued on two", *questions})
        assert [c["id"] for c in (await a.get("/v1/conversations")).json()["data"]] == [conversation]
    finally:
        for gen in (one, two):
            await gen.aclose()


async def test_a_busy_conversation_answers_409_after_the_wait(database_url: str, mock: Upstream) -> None:
    mock.delay = 1.5
    async for client in running(conversation_app(database_url, conversation_lock_timeout=0.1)):
        conversation = await new_conversation(client)
        first = asyncio.create_task(say(client, conversation, "slow"))
        await upstream_called(mock, 1)
        r = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "impatient"})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "conversation_busy"
        assert r.headers["retry-after"]
        await first
        assert_paired(await history(client, conversation), {"slow"})


# -- presets ---------------------------------------------------------------------------------

ACME = {"company": "Acme Anvils", "product_facts": "Anvils ship within 3 days.", "tone": "formal"}


async def test_a_preset_conversation_renders_its_prompt_and_tunes_its_replies(
    client: httpx.AsyncClient, mock: Upstream
) -> None:
    r = await client.post("/v1/conversations", json={"preset": "customer_service", "inputs": ACME})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["preset"] == "customer_service"
    assert created["inputs"] == ACME
    assert "Acme Anvils" in created["system"]
    assert "Anvils ship within 3 days." in created["system"]
    conversation = created["id"]

    reply = await say(client, conversation, "When will my anvil ship?")
    system = mock.sent()[0]
    assert system == {"role": "system", "content": created["system"]}
    assert reply["sampling"]["tuned"] is True
    assert reply["sampling"]["variant"] in {"steady", "balanced", "warm"}
    assert reply["sampling"]["max_tokens"] == 300  # the preset's default
    # Rated like any generation: feedback reaches the preset's tuning.
    r = await client.post("/v1/feedback", json={"generation_id": reply["id"], "rating": "up"})
    assert r.status_code == 200, r.text
    assert r.json()["preset"] == "customer_service"
    assert r.json()["variant"] == reply["sampling"]["variant"]

    # A message's own temperature wins, and that reply is not tuned.
    own = await say(client, conversation, "And to Norway?", temperature=0.0)
    assert own["sampling"]["temperature"] == 0.0
    assert own["sampling"]["tuned"] is False
    assert own["sampling"]["max_tokens"] == 300
    assert mock.sent()[0] == system


async def test_a_conversations_own_sampling_beats_the_presets(client: httpx.AsyncClient) -> None:
    conversation = await new_conversation(
        client, system=None, preset="customer_service", inputs=ACME, sampling={"temperature": 0.1}
    )
    reply = await say(client, conversation, "hello")
    assert reply["sampling"]["temperature"] == 0.1
    assert reply["sampling"]["tuned"] is False


async def test_preset_mistakes_name_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/conversations", json={"preset": "customer_service", "inputs": {"tone": "formal"}}
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "inputs.company"
    r = await client.post("/v1/conversations", json={"preset": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "preset"
    r = await client.post(
        "/v1/conversations", json={"preset": "customer_service", "inputs": ACME, "system": "Be a pirate."}
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "system"
    r = await client.post("/v1/conversations", json={"inputs": ACME})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "inputs"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_replica_waits_for_the_other_replicas_reply_then_gives_up(
    database_url: str, mock: Upstream
) -> None:
    """The row lock, not the in-process lock, is what makes another replica wait."""
    mock.delay = 1.5
    one = running(conversation_app(database_url, conversation_lock_timeout=0.2))
    two = running(conversation_app(database_url, conversation_lock_timeout=0.2))
    a = await anext(one)
    b = await anext(two)
    try:
        conversation = await new_conversation(a)
        first = asyncio.create_task(say(a, conversation, "slow on one"))
        await upstream_called(mock, 1)  # the first reply is under way, its turn held
        r = await b.post(f"/v1/conversations/{conversation}/messages", json={"content": "on two"})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "conversation_busy"
        await first
        assert_paired(await history(b, conversation), {"slow on one"})
    finally:
        for gen in (one, two):
            await gen.aclose()
