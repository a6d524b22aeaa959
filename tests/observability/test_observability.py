"""What an operator sees: Prometheus series on /metrics and one JSON access line per request,
never with prompt text or a key in it."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import respx
from fastapi import FastAPI

from app.main import create_app
from app.observability.logging import JsonFormatter, TextFormatter, configure_logging
from tests.access_helpers import bearer, chat_body, create_key, keys_app, running
from tests.conftest import openai_settings, serving

PROMPT = "my very private prompt about Alice"
KEY = "sk-test-secret-key-0000"

COMPLETION = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


def sse_body(*texts: str) -> bytes:
    frames = [
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini", "choices": [c]}
        for c in [{"index": 0, "delta": {"content": t}, "finish_reason": None} for t in texts]
        + [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    ]
    frames.append(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": len(texts), "total_tokens": 9 + len(texts)},
        }
    )
    return b"".join(b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames) + b"data: [DONE]\n\n"


async def _serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as client:
        yield client


@pytest.fixture
async def app(upstream: respx.MockRouter) -> FastAPI:
    return create_app(openai_settings(log_level="INFO"))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _serve(app):
        yield c


async def scrape(client: httpx.AsyncClient) -> str:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus' text format (labels in any order)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part) if rest else {}
        if {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return None


async def test_requests_are_counted_by_route_template_and_status(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(json=COMPLETION)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}
    assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    assert (await client.post("/v1/generate", json={"prompt": ""})).status_code == 400
    assert (await client.get("/v1/models/gpt-4o-mini")).status_code == 200
    assert (await client.get("/no/such/page")).status_code == 404

    text = await scrape(client)
    post = {"method": "POST"}
    assert (
        sample(text, "genserve_http_requests_total", **post, route="/v1/chat/completions", status="200") == 2
    )
    assert sample(text, "genserve_http_requests_total", **post, route="/v1/generate", status="400") == 1
    # Route templates, not raw paths: one series per endpoint, whatever the ids in the URL.
    get = {"method": "GET"}
    assert (
        sample(text, "genserve_http_requests_total", **get, route="/v1/models/{model_id:path}", status="200")
        == 1
    )
    assert sample(text, "genserve_http_requests_total", **get, route="unmatched", status="404") == 1
    count = "genserve_http_request_duration_seconds_count"
    assert sample(text, count, **post, route="/v1/chat/completions", status="200") == 2
    assert (
        sample(text, "genserve_upstream_duration_seconds_count", provider="openai", model="gpt-4o-mini") == 2
    )
    assert sample(text, "genserve_prompt_tokens_total", model="gpt-4o-mini") == 10
    assert sample(text, "genserve_completion_tokens_total", model="gpt-4o-mini") == 4
    ok = {"endpoint": "chat", "provider": "openai", "model": "gpt-4o-mini", "outcome": "ok"}
    assert sample(text, "genserve_generations_total", **ok) == 2


async def test_streams_report_time_to_first_token_and_tokens(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(
        content=sse_body("Hel", "lo", "!"), headers={"content-type": "text/event-stream"}
    )
    r = await client.post("/v1/generate", json={"prompt": PROMPT, "stream": True})
    assert r.status_code == 200
    assert r.text.endswith("data: [DONE]\n\n")
    text = await scrape(client)
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert sample(text, "genserve_time_to_first_token_seconds_count", **labels) == 1
    assert sample(text, "genserve_completion_tokens_total", model="gpt-4o-mini") == 3
    assert sample(text, "genserve_prompt_tokens_total", model="gpt-4o-mini") == 9


async def test_upstream_errors_are_counted_by_provider_model_and_code(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(
        500, json={"error": {"message": "boom", "type": "server_error"}}
    )
    r = await client.post("/v1/generate", json={"prompt": PROMPT})
    assert r.status_code == 502
    text = await scrape(client)
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert sample(text, "genserve_upstream_errors_total", **labels, code="upstream_error") == 1
    assert (
        sample(text, "genserve_http_requests_total", method="POST", route="/v1/generate", status="502") == 1
    )


async def test_safeguards_counters_are_exported(app: FastAPI, client: httpx.AsyncClient) -> None:
    safeguards = app.state.genserve.safeguards
    safeguards.cache.hits, safeguards.cache.misses = 2, 1
    circuit = safeguards.resilience.circuit("openai:gpt-4o-mini")
    for _ in range(circuit.threshold):
        circuit.record_failure()
    safeguards.resilience.retries_total = 3
    app.state.genserve.metrics.rate_limited("requests_per_minute")
    text = await scrape(client)
    assert sample(text, "genserve_cache_lookups_total", result="hit") == 2
    assert sample(text, "genserve_cache_lookups_total", result="miss") == 1
    assert sample(text, "genserve_circuit_state", upstream="openai:gpt-4o-mini") == 2
    assert sample(text, "genserve_circuit_opened_total", upstream="openai:gpt-4o-mini") == 1
    assert sample(text, "genserve_upstream_retries_total") == 3
    assert sample(text, "genserve_rate_limited_total", limit="requests_per_minute") == 1


async def test_each_app_has_its_own_registry(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=COMPLETION)
    first, second = create_app(openai_settings()), create_app(openai_settings())
    async for one in _serve(first):
        async for two in _serve(second):
            await one.post("/v1/generate", json={"prompt": PROMPT})
            route = {"method": "POST", "route": "/v1/generate", "status": "200"}
            assert sample(await scrape(one), "genserve_http_requests_total", **route) == 1
            assert sample(await scrape(two), "genserve_http_requests_total", **route) is None


async def test_local_model_queue_depth_is_exported(local_client: httpx.AsyncClient) -> None:
    text = await scrape(local_client)
    assert sample(text, "genserve_local_queue_depth") == 0


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "genserve.access"]


async def test_one_json_line_per_request_with_what_an_operator_needs(
    client: httpx.AsyncClient, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.post("/chat/completions").respond(json=COMPLETION)
    with caplog.at_level(logging.INFO, logger="genserve"):
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]},
            headers={"x-request-id": "req-123"},
        )
        assert r.status_code == 200
        await client.post("/v1/generate", json={"prompt": PROMPT, "temperature": 9})
    lines = access_lines(caplog)
    assert len(lines) == 2
    ok, bad = lines
    assert ok["msg"] == "request"
    assert ok["level"] == "INFO"
    assert ok["request_id"] == "req-123"
    assert ok["route"] == "/v1/chat/completions"
    assert ok["status"] == 200
    assert ok["model"] == "gpt-4o-mini"
    assert ok["provider"] == "openai"
    assert ok["prompt_tokens"] == 5
    assert ok["completion_tokens"] == 2
    assert ok["generation_id"] == r.json()["id"]
    assert isinstance(ok["latency_ms"], float)
    assert bad["status"] == 400
    assert bad["route"] == "/v1/generate"
    assert bad["request_id"]  # minted when the client sends none


async def test_logs_never_contain_prompt_text_or_keys(
    client: httpx.AsyncClient, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    # An upstream that quotes the key back, then one that fails outright.
    upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {KEY}."}}),
            httpx.Response(500, text=f"crash while reading {PROMPT}"),
            httpx.Response(200, content=sse_body("a", "b"), headers={"content-type": "text/event-stream"}),
        ]
    )
    with caplog.at_level(logging.DEBUG):
        assert (await client.post("/v1/generate", json={"prompt": PROMPT})).status_code == 502
        assert (
            await client.post("/v1/generate", json={"prompt": PROMPT, "system": PROMPT})
        ).status_code == 502
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "stream": True},
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert r.status_code == 200
    assert len(access_lines(caplog)) == 3
    for formatter in (JsonFormatter(), TextFormatter()):
        output = "\n".join(formatter.format(record) for record in caplog.records)
        assert "Alice" not in output
        assert KEY not in output
        assert "sk-test" not in output


async def test_text_format_is_one_readable_line(caplog: pytest.LogCaptureFixture) -> None:
    settings = openai_settings(log_level="INFO", log_format="text")
    logger = logging.getLogger("genserve")
    level, handlers = logger.level, list(logger.handlers)
    try:
        configure_logging(settings)  # what `python -m app` does
        formatter = logger.handlers[-1].formatter
        assert isinstance(formatter, TextFormatter)
        assert logger.level == logging.INFO
        with caplog.at_level(logging.INFO, logger="genserve"):
            async for client in _serve(create_app(settings)):
                await client.get("/v1/models")
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers
    (record,) = [r for r in caplog.records if r.name == "genserve.access"]
    line = formatter.format(record)
    assert "\n" not in line
    assert "genserve.access: request" in line
    assert "route=/v1/models" in line
    assert "status=200" in line


async def test_rate_limit_refusals_are_counted_by_limit(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=COMPLETION)
    app = keys_app()
    async with running(app) as client:
        _, secret = await create_key(client, limits={"requests_per_minute": 1})
        first = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        second = await client.post("/v1/chat/completions", json=chat_body(), headers=bearer(secret))
        assert (first.status_code, second.status_code) == (200, 429)
        text = await scrape(client)
    # One refusal, counted once, under the limit that refused it.
    assert sample(text, "genserve_rate_limited_total", limit="requests_per_minute") == 1
    assert 'genserve_rate_limited_total{limit="rate_limit_exceeded"}' not in text
    route = {"method": "POST", "route": "/v1/chat/completions"}
    assert sample(text, "genserve_http_requests_total", **route, status="429") == 1
    refused = {"endpoint": "chat", "provider": "openai", "model": "gpt-4o-mini", "outcome": "refused"}
    assert sample(text, "genserve_generations_total", **refused) == 1
    # A refusal is this service's policy, not a failure of the upstream.
    assert "genserve_upstream_errors_total{" not in text


async def test_tool_calls_are_counted_and_logged_without_their_arguments(
    client: httpx.AsyncClient, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    secret_argument = "Alice's order at 12 Elm Street"
    answer = {
        **COMPLETION,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": "get_order",
                                "arguments": json.dumps({"q": secret_argument}),
                            },
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    upstream.post("/chat/completions").respond(json=answer)
    tool = {"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}
    with caplog.at_level(logging.INFO, logger="genserve"):
        r = await client.post(
            "/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": PROMPT}],
                "tools": [tool],
                "logprobs": True,
            },
        )
    assert r.status_code == 200, r.text
    [line] = access_lines(caplog)
    assert (line["tools"], line["tool_calls"], line["logprobs"]) == (1, 1, 0)
    output = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert secret_argument not in output
    assert sample(await scrape(client), "genserve_tool_calls_total", model="gpt-4o-mini") == 1
