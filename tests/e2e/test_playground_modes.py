"""The playground's preset and chat modes and its thumbs, in headless Chromium against the
real service (presets, conversations and feedback of issue 3)."""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.async_api import Page

from tests.e2e.harness import LiveServer, Watch

pytestmark = pytest.mark.slow


async def finished(page: Page) -> None:
    await page.wait_for_selector("#meta:not([hidden])")


async def summary_count(server: LiveServer, preset: str | None) -> tuple[int, float | None]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        body = (await client.get("/v1/feedback/summary")).json()
    for entry in body["presets"]:
        if entry["preset"] == preset:
            return entry["count"], entry["mean_rating"]
    return 0, None


async def test_preset_inputs_come_from_its_schema(page: Page, watch: Watch, live_server: LiveServer) -> None:
    await page.click("#tab-preset")
    await page.select_option("#preset", "copywriting")
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        presets = {p["name"]: p for p in (await client.get("/v1/presets")).json()["data"]}
    schema = presets["copywriting"]["input_schema"]
    for name, prop in schema["properties"].items():
        field = page.locator(f"#pi-{name}")
        assert await field.count() == 1, name
        assert (await field.get_attribute("required") is not None) == (name in schema["required"]), name
        if "enum" in prop:
            options = await field.locator("option").evaluate_all("os => os.map(o => o.value).filter(Boolean)")
            assert options == [str(v) for v in prop["enum"]], name
    # A required input left empty is caught before anything is sent.
    await page.click("#send")
    assert "topic" in await page.inner_text("#error")
    assert watch.posted("/generate") == []

    await page.select_option("#pi-kind", "ad")
    await page.fill("#pi-topic", "a bakery that opens at 5 am")
    await page.fill("#f-max_tokens", "16")
    await page.fill("#f-seed", "1")  # tuning still picks the temperature: each variant answers
    await page.click("#send")
    await finished(page)
    sent = watch.posted("/v1/presets/copywriting/generate")
    assert len(sent) == 1
    body = json.loads(sent[0].post_data or "{}")
    assert body["inputs"]["kind"] == "ad"
    assert body["inputs"]["topic"] == "a bakery that opens at 5 am"
    assert body["max_tokens"] == 16
    assert body["stream"] is True
    assert (await page.inner_text("#choices .text")).strip()
    # Temperature was left to the preset, so its tuning picked a variant, and the page says which.
    tuned = await page.inner_text("[data-sampling='tuned']")
    variants = presets["copywriting"]["tuning"]["variants"]
    assert tuned.startswith("tuned yes (variant ")
    assert tuned.removeprefix("tuned yes (variant ").rstrip(")") in variants

    # An explicit temperature always wins over tuning.
    await page.fill("#f-temperature", "0.4")
    await page.click("#send")
    await finished(page)
    assert await page.inner_text("[data-sampling='tuned']") == "tuned no"
    assert await page.inner_text("[data-sampling='temperature']") == "temperature 0.4"


async def test_rating_an_answer_reaches_the_feedback_summary(page: Page, live_server: LiveServer) -> None:
    await page.click("#tab-preset")
    await page.select_option("#preset", "qa")
    await page.fill("#pi-question", "What colour is the sky?")
    await page.fill("#f-max_tokens", "12")
    await page.click("#send")
    await finished(page)
    before, _ = await summary_count(live_server, "qa")

    good = page.get_by_role("button", name="Good answer")
    bad = page.get_by_role("button", name="Bad answer")
    await good.click()
    await page.wait_for_selector("#feedback .feedback-status:text('Thanks, recorded.')")
    assert await good.get_attribute("aria-pressed") == "true"
    count, _ = await summary_count(live_server, "qa")
    assert count == before + 1

    # Changing one's mind replaces the rating instead of adding one.
    await bad.click()
    await page.wait_for_function(
        "document.querySelector('.thumb.down').getAttribute('aria-pressed') === 'true'"
    )
    assert await good.get_attribute("aria-pressed") == "false"
    again, _ = await summary_count(live_server, "qa")
    assert again == count


async def test_chat_survives_a_reload(page: Page, watch: Watch, live_server: LiveServer) -> None:
    await page.click("#tab-chat")
    await page.click("#new-conversation")
    await page.fill("#chat-system", "You are a cheerful assistant.")
    await page.fill("#f-max_tokens", "12")
    await page.fill("#f-seed", "3")
    await page.fill("#message", "Hello! What is your name?")
    await page.click("#send")
    await finished(page)
    assert await page.input_value("#message") == ""
    await page.fill("#message", "Tell me a fun fact.")
    await page.click("#send")
    await page.wait_for_function(
        "document.querySelectorAll('#thread .msg.assistant:not(.pending)').length === 2"
    )
    await finished(page)
    posts = watch.posted("/messages")
    assert len(posts) == 2
    assert all(json.loads(p.post_data or "{}")["stream"] is True for p in posts)
    before = await page.locator("#thread .msg .msg-text").all_inner_texts()
    assert len(before) == 4

    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    assert await page.get_attribute("#tab-chat", "aria-selected") == "true"
    await page.wait_for_function("document.querySelectorAll('#thread .msg').length === 4")
    after = await page.locator("#thread .msg .msg-text").all_inner_texts()
    assert after == before
    roles = await page.locator("#thread .msg").evaluate_all("ms => ms.map(m => m.dataset.role)")
    assert roles == ["user", "assistant", "user", "assistant"]

    # The service has the same conversation; the page can rate a stored reply too.
    conversation_id = await page.input_value("#conversation")
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        stored = (await client.get(f"/v1/conversations/{conversation_id}")).json()
    assert stored["system"] == "You are a cheerful assistant."
    assert [m["content"] for m in stored["messages"]] == after
    await page.locator("#thread .msg.assistant").first.get_by_role("button", name="Good answer").click()
    await page.wait_for_selector("#thread .feedback-status:text('Thanks, recorded.')")

    # Delete asks twice, then the conversation is gone here and on the service.
    await page.click("#delete-conversation")
    assert await page.inner_text("#delete-conversation") == "Really delete?"
    await page.click("#delete-conversation")
    await page.wait_for_function("document.querySelector('#status').textContent === 'Conversation deleted.'")
    assert await page.locator("#thread .msg").count() == 0
    options = await page.locator("#conversation option").evaluate_all("os => os.map(o => o.value)")
    assert conversation_id not in options
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        assert (await client.get(f"/v1/conversations/{conversation_id}")).status_code == 404
