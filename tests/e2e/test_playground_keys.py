"""The playground on a service whose API needs client keys (`auth_mode=keys`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import httpx
import pytest
from playwright.async_api import Browser

from app.settings import Settings
from tests.e2e.harness import LiveServer, open_page, serve

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "admin-token-for-the-playground-tests"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        log_level="WARNING",
        provider="local",
        data_dir=tmp_path_factory.mktemp("e2e-keys"),
        auth_mode="keys",
        admin_token=ADMIN_TOKEN,
    )
    with serve(settings) as server:
        yield server


async def test_the_key_field_unlocks_a_keyed_service(browser: Browser, keyed_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=keyed_server.url) as client:
        created = await client.post(
            "/admin/keys", json={"name": "playground"}, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert created.status_code == 201, created.text
        secret = created.json()["key"]
        refused = (await client.get("/v1/models")).json()["error"]

    page, watch = await open_page(browser, keyed_server)
    try:
        # Without a key the page says what the service said, and asks for the key.
        error = page.locator("#error .error-message")
        assert await error.inner_text() == refused["message"]
        assert "HTTP 401" in await page.inner_text("#error")
        assert await page.evaluate("document.querySelector('#key-box').open")
        assert await page.evaluate("document.activeElement.id") == "api-key"

        await page.fill("#api-key", "sk-wrong")
        await page.press("#api-key", "Enter")
        await page.wait_for_function("document.querySelector('#error').textContent.includes('HTTP 401')")

        await page.fill("#api-key", secret)
        await page.press("#api-key", "Tab")
        await page.wait_for_function("document.querySelector('#model option')?.value !== ''")
        await page.wait_for_selector("#error", state="hidden")
        await page.fill("#prompt", "Say hi.")
        await page.fill("#f-max_tokens", "4")
        await page.click("#send")
        await page.wait_for_selector("#meta:not([hidden])")
        assert await watch.posted("/v1/generate")[-1].header_value("authorization") == f"Bearer {secret}"

        # The copied command names the key by variable, and works with it set.
        await page.click("#copy-curl")
        command = await page.evaluate("navigator.clipboard.readText()")
        assert secret not in command
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            stdout=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "GENSERVE_API_KEY": secret},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert out.decode().rstrip().endswith("data: [DONE]")
    finally:
        await page.context.close()
    assert not watch.errors, watch.errors
