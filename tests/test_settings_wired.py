"""Settings that the documentation names do what it says: `max_prompt_chars` bounds prompts,
`environment=production` refuses the unsafe defaults, and `log_prompts` (which contradicted
"no request text in a log line") is gone."""

from __future__ import annotations

import httpx
import pytest
import respx
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings, env_example
from tests.conftest import make_settings, openai_settings
from tests.upstream_faults import ok

ADMIN = "an-admin-token-of-32-characters!"


async def post(settings: Settings, path: str, body: dict[str, object]) -> httpx.Response:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test") as client:
            return await client.post(path, json=body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/generate", {"prompt": "x" * 1001}),
        ("/v1/generate", {"prompt": "hi", "system": "x" * 1001}),
        (
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 1001}]},
        ),
    ],
)
async def test_a_prompt_longer_than_max_prompt_chars_is_refused(
    upstream: respx.MockRouter, path: str, body: dict[str, object]
) -> None:
    upstream.post("/chat/completions").mock(return_value=ok())
    r = await post(openai_settings(max_prompt_chars=1000), path, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "prompt_too_long"
    assert r.json()["error"]["param"] in ("prompt", "system", "messages[0].content")
    assert "1000" in r.json()["error"]["message"]


async def test_max_prompt_chars_can_allow_more_than_the_default(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").mock(return_value=ok())
    settings = openai_settings(max_prompt_chars=300_000, max_body_bytes=2_000_000)
    r = await post(settings, "/v1/generate", {"prompt": "x" * 250_000, "max_tokens": 5})
    assert r.status_code == 200, r.text


async def test_a_conversation_system_prompt_is_bounded_too(upstream: respx.MockRouter) -> None:
    r = await post(openai_settings(max_prompt_chars=1000), "/v1/conversations", {"system": "x" * 1001})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "system"


@pytest.mark.parametrize(
    "unsafe",
    [
        {"auth_mode": "none"},
        {"auth_mode": "keys", "admin_token": ADMIN, "cors_origins": ["*"]},
        {"auth_mode": "keys", "admin_token": ADMIN, "api_docs": True},
    ],
)
def test_production_refuses_unsafe_defaults(unsafe: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="production"):
        make_settings(environment="production", **unsafe)


def test_production_starts_when_safe() -> None:
    settings = make_settings(environment="production", auth_mode="keys", admin_token=ADMIN)
    assert settings.environment == "production"
    # Something else authenticates callers (a proxy): the operator says so explicitly.
    make_settings(environment="production", auth_mode="none", allow_open_access=True)


def test_log_prompts_is_gone() -> None:
    assert "log_prompts" not in Settings.model_fields
    assert "LOG_PROMPTS" not in env_example()
