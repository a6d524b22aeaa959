"""Logs never contain prompt text or keys by default, even when things go wrong."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from tests import openai_mock as mock

PROMPT = "my-private-prompt-text-8271"
KEY = "sk-test-secret-key-0000"


def leaked(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = []
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__} {record.exc_text or ''}"
        if record.exc_info and record.exc_info[1] is not None:
            text += repr(record.exc_info[1])
        for secret in (PROMPT, KEY):
            if secret in text:
                found.append(f"{record.name}: {secret}")
    return found


async def test_upstream_failures_log_neither_prompts_nor_keys(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    route = upstream.post("/chat/completions")
    messages = [{"role": "user", "content": PROMPT}]
    route.respond(
        401, json={"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    )
    assert (
        await openai_client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": messages})
    ).status_code == 502
    route.respond(500, json={"error": {"message": f"crashed on {PROMPT}"}})
    assert (await openai_client.post("/v1/generate", json={"prompt": PROMPT})).status_code == 502
    route.mock(return_value=mock.broken_sse_response([mock.chunk(PROMPT)]))
    r = await openai_client.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": messages, "stream": True}
    )
    assert "error" in r.text
    route.mock(side_effect=httpx.ConnectError(f"refused {KEY}"))
    assert (
        await openai_client.post("/v1/generate", json={"prompt": PROMPT, "stream": True})
    ).status_code == 502
    route.respond(200, content=b"{not json", headers={"content-type": "application/json"})
    assert (await openai_client.post("/v1/generate", json={"prompt": PROMPT})).status_code == 502
    assert leaked(caplog) == []


async def test_bad_requests_log_no_prompt(
    local_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for body in (
        {"prompt": PROMPT, "n": 0},
        {"prompt": PROMPT * 1000, "max_tokens": 1},
        {"prompt": PROMPT, "max_tokens": 2, "seed": 1},
        {"prompt": PROMPT, "max_tokens": 2, "seed": 1, "stream": True},
    ):
        r = await local_client.post("/v1/generate", json=body)
        assert r.status_code in (200, 400)
    assert leaked(caplog) == []
