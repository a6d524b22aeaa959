"""The service answers with real text from the embedded model and from a mocked upstream."""

from __future__ import annotations

import httpx
import respx


async def test_generate_with_the_embedded_model(local_client: httpx.AsyncClient) -> None:
    r = await local_client.post("/v1/generate", json={"prompt": "Say hello.", "max_tokens": 8, "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"].strip()
    assert body["provider"] == "local"
    assert body["sampling"]["seed"] == 1
    assert body["usage"]["completion_tokens"] <= 8
    assert r.headers["x-request-id"]


async def test_chat_through_a_mocked_upstream(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    )
    r = await openai_client.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hi!"
    assert r.json()["usage"]["total_tokens"] == 7
