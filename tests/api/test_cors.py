"""Browsers are first-class clients: configured origins may call the API, others may not."""

from __future__ import annotations

import pytest
import respx

from app.main import create_app
from app.settings import Settings
from tests import openai_mock as mock
from tests.conftest import _client, openai_settings

ALLOWED = "https://app.example"
CHAT = "/v1/chat/completions"
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization",
    }


async def test_an_allowed_origin_may_call_the_api(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=mock.completion("Hi!"))
    async for client in _client(create_app(openai_settings(cors_origins=[ALLOWED]))):
        r = await client.options(CHAT, headers=preflight(ALLOWED))
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "authorization" in r.headers["access-control-allow-headers"].lower()

        r = await client.post(CHAT, json=HELLO, headers={"origin": ALLOWED})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ALLOWED
        exposed = r.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed
        assert "retry-after" in exposed

        # Error bodies reach the page too, so it can show what went wrong.
        r = await client.post(CHAT, json={"messages": []}, headers={"origin": ALLOWED})
        assert r.status_code == 400
        assert r.headers["access-control-allow-origin"] == ALLOWED


async def test_other_origins_are_refused() -> None:
    async for client in _client(create_app(openai_settings(cors_origins=[ALLOWED]))):
        r = await client.options(CHAT, headers=preflight("https://evil.example"))
        assert r.status_code == 400
        assert "access-control-allow-origin" not in r.headers
        r = await client.get("/v1/models", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_without_configured_origins_no_cors_headers_are_sent() -> None:
    async for client in _client(create_app(openai_settings())):
        r = await client.get("/v1/models", headers={"origin": ALLOWED})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers


async def test_a_wildcard_allows_any_origin() -> None:
    async for client in _client(create_app(openai_settings(cors_origins=["*"]))):
        r = await client.options(CHAT, headers=preflight("https://anywhere.example"))
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] in ("*", "https://anywhere.example")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
        ('["https://a.example"]', ["https://a.example"]),
        ("*", ["*"]),
        ("", []),
    ],
)
def test_origins_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("GENSERVE_CORS_ORIGINS", value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_origins == expected


async def test_preflight_responses_carry_a_request_id() -> None:
    async for client in _client(create_app(openai_settings(cors_origins=[ALLOWED]))):
        r = await client.options(CHAT, headers=preflight(ALLOWED))
        assert r.headers["x-request-id"]
