"""Deeply nested JSON and out-of-range integers get a 400 in OpenAI's error shape, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from tests.upstream_faults import ok


def nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def assert_openai_400(r: httpx.Response, code: str) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code


@pytest.mark.parametrize("depth", [300, 5000])
@pytest.mark.parametrize("field", ["metadata", "response_format"])
async def test_deeply_nested_json_is_refused(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, field: str, depth: int
) -> None:
    upstream.post("/chat/completions").mock(return_value=ok())
    head = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, '
    deep = b'{"a": ' * depth + b'"x"' + b"}" * depth  # written out: json.dumps recurses too
    r = await openai_client.post(
        "/v1/chat/completions",
        content=head + f'"{field}": '.encode() + deep + b"}",
        headers={"content-type": "application/json"},
    )
    assert_openai_400(r, "invalid_json")
    assert "nested" in r.json()["error"]["message"]


async def test_moderate_nesting_and_many_objects_still_work(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=ok())
    messages = [{"role": "user", "content": f"m{i}"} for i in range(300)]  # many braces, shallow
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": nested(20)}}
    body = {"model": "gpt-4o-mini", "messages": messages, "response_format": fmt, "temperature": 0}
    r = await openai_client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text


async def test_invalid_json_with_many_brackets_is_still_invalid_json(
    openai_client: httpx.AsyncClient,
) -> None:
    r = await openai_client.post(
        "/v1/chat/completions", content=b"[" * 100 + b"{", headers={"content-type": "application/json"}
    )
    assert_openai_400(r, "invalid_json")


@pytest.mark.parametrize("value", ["99999999999999999999", "2147483648", "-1", "0"])
async def test_an_out_of_range_before_is_refused(openai_client: httpx.AsyncClient, value: str) -> None:
    r = await openai_client.post("/v1/conversations", json={})
    assert r.status_code == 200, r.text
    conversation = r.json()["id"]
    r = await openai_client.get(f"/v1/conversations/{conversation}", params={"before": value})
    assert_openai_400(r, "invalid_value")
    assert r.json()["error"]["param"] == "before"
