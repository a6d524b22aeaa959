"""The playground at `/`, driven in headless Chromium against the real service and model."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, Route

from tests.e2e.harness import REPO, LiveServer, Watch, open_page

pytestmark = pytest.mark.slow

LONG_PROMPT = "Write a very long story about a dragon, with many chapters."


async def ask(page: Page, prompt: str, **fields: object) -> None:
    """Fill the generate form the way a user would, and press Send."""
    await page.fill("#prompt", prompt)
    if fields:
        await unfold_sampling(page)
    for name, value in fields.items():
        await page.fill(f"#f-{name}", str(value))
    await page.click("#send")


async def unfold_sampling(page: Page) -> None:
    """The sampling controls start folded on a phone."""
    if await page.get_attribute("#sampling", "open") is None:
        await page.click("#sampling > summary")


async def finished(page: Page) -> None:
    await page.wait_for_selector("#meta:not([hidden])")


async def run(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_page_is_served_with_everything_it_needs(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset, kind in (("app.js", "javascript"), ("style.css", "css"), ("favicon.svg", "svg")):
            r = await client.get(f"/playground/{asset}")
            assert r.status_code == 200
            assert kind in r.headers["content-type"]
        missing = await client.get("/playground/secrets.txt")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"


async def test_streamed_text_arrives_piece_by_piece(
    page: Page, watch: Watch, live_server: LiveServer
) -> None:
    await page.evaluate(
        """() => {
          window.seen = [];
          new MutationObserver(() => {
            const text = document.querySelector('#choices .text')?.textContent ?? '';
            if (document.querySelector('#meta').hidden) window.seen.push(text.length);
          }).observe(document.querySelector('#choices'),
                     {subtree: true, childList: true, characterData: true});
        }"""
    )
    await ask(page, "Say hello to the world.", max_tokens=24, seed=7, temperature=0.8)
    await finished(page)
    seen: list[int] = await page.evaluate("window.seen")
    growing = sorted({n for n in seen if n > 0})
    assert len(growing) >= 3, f"text should arrive in pieces, saw lengths {seen}"
    shown = await page.inner_text("#choices .choice .text")
    assert "Done in" in await page.inner_text("#status")

    # Streaming was on by default, and the page showed exactly the text the model produced:
    # the same request, not streamed, gives the same text (same seed).
    sent = json.loads(watch.posted("/v1/generate")[0].post_data or "{}")
    assert sent["stream"] is True
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as client:
        again = (await client.post("/v1/generate", json={**sent, "stream": False})).json()
    assert shown.strip() == again["text"].strip()
    assert await page.inner_text("#meta-usage") == (
        f"{again['usage']['prompt_tokens']} prompt + {again['usage']['completion_tokens']} completion"
        f" = {again['usage']['total_tokens']} tokens"
    )


async def test_temperature_moves_and_the_metadata_says_so(page: Page) -> None:
    await page.fill("#f-temperature", "1.3")
    assert await page.input_value("#r-temperature") == "1.3"  # the slider follows
    # The slider works from the keyboard too, and only touches its own field.
    await page.focus("#r-top_p")
    await page.keyboard.press("ArrowLeft")
    assert await page.input_value("#f-top_p") == "0.99"
    await ask(page, "Name a colour.", max_tokens=8)
    await finished(page)
    sampling = page.locator("#meta-sampling")
    assert await sampling.locator("[data-sampling='temperature']").inner_text() == "temperature 1.3"
    assert await sampling.locator("[data-sampling='top_p']").inner_text() == "top_p 0.99"
    assert await sampling.locator("[data-sampling='tuned']").inner_text() == "tuned no"
    seed = (await sampling.locator("[data-sampling='seed']").inner_text()).split()[1]
    assert seed.isdigit()
    for part in ("#meta-finish", "#meta-ttft", "#meta-tps"):
        assert (await page.inner_text(part)).strip() not in ("", "–")
    assert "tokens/s" in await page.inner_text("#meta-tps")
    assert await page.inner_text("#meta-finish") in ("stop", "length")

    # "reuse" puts the seed back, so the answer can be reproduced.
    await sampling.get_by_role("button", name=f"Reuse seed {seed}").click()
    assert await page.input_value("#f-seed") == seed


async def test_stop_aborts_the_stream_and_the_service_stops_generating(
    page: Page, live_server: LiveServer
) -> None:
    await ask(page, LONG_PROMPT, max_tokens=1500, seed=2, temperature=0.7)
    text = page.locator("#choices .choice .text")
    await page.wait_for_function(
        "document.querySelector('#choices .text').textContent.length > 20", polling=50
    )
    await page.click("#stop-button")
    stopped_at = time.monotonic()
    await page.wait_for_function("document.querySelector('#status').textContent.startsWith('Stopped')")
    assert await page.is_disabled("#stop-button")
    assert await page.is_enabled("#send")
    assert await page.is_hidden("#meta")

    # Unstopped, this answer runs for 1500 tokens (about half a minute here); the model is free
    # again almost at once.
    provider = live_server.state.providers["local"]
    while provider.queue_depth:  # type: ignore[attr-defined]
        assert time.monotonic() - stopped_at < 10, "the service kept generating after Stop"
        await asyncio.sleep(0.05)
    partial = await text.inner_text()
    await asyncio.sleep(0.5)
    assert await text.inner_text() == partial, "text kept arriving after Stop"

    await ask(page, "Say yes.", max_tokens=4)
    await finished(page)


async def test_a_repeated_seeded_request_says_it_came_from_the_cache(page: Page) -> None:
    await ask(page, "Name a fruit.", max_tokens=6, seed=5, temperature=0.5)
    await finished(page)
    assert (await page.inner_text("#meta-served")).endswith("cache miss")
    first = await page.inner_text("#choices .text")
    await page.click("#send")
    await finished(page)
    assert (await page.inner_text("#meta-served")).endswith("cache hit")
    assert await page.inner_text("#choices .text") == first


async def test_n_choices_are_shown_side_by_side(page: Page) -> None:
    await ask(page, "Invent a name for a cat.", max_tokens=8, n=3, seed=1)
    await finished(page)
    cards = page.locator("#choices .choice")
    assert await cards.count() == 3
    boxes = [await cards.nth(i).bounding_box() for i in range(3)]
    assert all(b is not None for b in boxes)
    tops = {round(b["y"]) for b in boxes if b}
    lefts = [b["x"] for b in boxes if b]
    assert len(tops) == 1, boxes
    assert lefts == sorted(lefts), boxes
    for i in range(3):
        assert (await cards.nth(i).locator(".text").inner_text()).strip()
        assert await cards.nth(i).locator(".finish").inner_text() in ("stop", "length")
    assert "n 3" in await page.inner_text("[data-sampling='n']")


async def test_service_errors_show_the_services_message(page: Page, live_server: LiveServer) -> None:
    too_long = "lorem ipsum dolor " * 1500
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as client:
        expected = (await client.post("/v1/generate", json={"prompt": too_long})).json()["error"]
    await page.fill("#prompt", too_long)
    await page.click("#send")
    error = page.locator("#error")
    await error.wait_for(state="visible")
    assert await error.locator(".error-message").inner_text() == expected["message"]
    assert "HTTP 400" in await error.inner_text()
    assert "context_length_exceeded" in await error.inner_text()
    assert "request " in await error.inner_text()  # the x-request-id, to find it in the logs
    assert await page.inner_text("#status") == "Failed."

    # An error event inside a stream is shown the same way.
    async def broken_stream(route: Route) -> None:
        body = 'data: {"error": {"message": "The upstream fell over.", "type": "upstream_error"}}\n\n'
        await route.fulfill(status=200, content_type="text/event-stream", body=body + "data: [DONE]\n\n")

    await page.route("**/v1/generate", broken_stream)
    await ask(page, "Hello", max_tokens=4)
    await page.wait_for_function(
        "document.querySelector('#error .error-message')?.textContent === 'The upstream fell over.'"
    )

    # And a service that cannot be reached says so, instead of leaving a blank panel.
    await page.unroute("**/v1/generate")
    await page.route("**/v1/generate", lambda route: route.abort("connectionrefused"))
    await page.click("#send")
    message = page.locator("#error .error-message")
    await page.wait_for_function(
        "document.querySelector('#error .error-message')?.textContent.startsWith('Could not reach')"
    )
    assert "Is it still running?" in await message.inner_text()


async def test_copy_as_curl_runs_exactly_what_was_sent(page: Page, watch: Watch) -> None:
    await ask(page, "Say 'it's fine'.", max_tokens=6, seed=3, temperature=0.2)
    await finished(page)
    await page.click("#copy-curl")
    command = await page.evaluate("navigator.clipboard.readText()")
    assert command == await page.inner_text("#snippet")
    assert command.startswith("curl -sS -N ")

    # The body in the command is byte for byte the body the page posted.
    argv = shlex.split(command.replace("\\\n", " "))
    sent = watch.posted("/v1/generate")[0].post_data
    assert argv[argv.index("-d") + 1] == sent

    out = await run("bash", "-c", command)
    assert out.rstrip().endswith("data: [DONE]")
    events = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: {")]
    final = events[-1]
    assert final["object"] == "generation"
    assert final["sampling"]["seed"] == 3
    assert final["sampling"]["temperature"] == 0.2
    # Same seed, same settings: the command reproduces the answer on the page.
    assert final["text"].strip() == (await page.inner_text("#choices .text")).strip()


async def test_copy_as_python_runs_with_the_openai_sdk(page: Page) -> None:
    await page.uncheck("#stream")
    await ask(page, "Say hi.", max_tokens=5, seed=11)
    await finished(page)
    await page.click("#copy-python")
    script = await page.evaluate("navigator.clipboard.readText()")
    assert "import openai" in script
    assert '"stream": False' in script
    out = await run(sys.executable, "-c", script, env={"PATH": os.environ.get("PATH", "")})
    assert "'seed': 11" in out

    # Streaming variant.
    await page.check("#stream")
    await page.click("#send")
    await finished(page)
    await page.click("#copy-python")
    script = await page.evaluate("navigator.clipboard.readText()")
    assert "stream=True" in script
    out = await run(sys.executable, "-c", script, env={"PATH": os.environ.get("PATH", "")})
    assert "'seed': 11" in out


async def test_api_key_is_kept_locally_and_sent_as_bearer(page: Page, watch: Watch) -> None:
    await page.click("#key-box summary")
    await page.fill("#api-key", "sk-playground-test")
    await page.press("#api-key", "Tab")
    assert await page.inner_text("#key-state") == "set"
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    assert await page.input_value("#api-key") == "sk-playground-test"

    await ask(page, "Hi", max_tokens=3)
    await finished(page)
    sent = watch.posted("/v1/generate")[-1]
    assert await sent.header_value("authorization") == "Bearer sk-playground-test"
    assert all("sk-playground-test" not in r.url for r in watch.requests)
    await page.click("#copy-curl")
    command = await page.evaluate("navigator.clipboard.readText()")
    assert "sk-playground-test" not in command
    assert "Authorization: Bearer $GENSERVE_API_KEY" in command

    await page.click("#key-box summary")
    await page.click("#forget-key")
    assert await page.evaluate("localStorage.getItem('genserve.apiKey')") is None


CONTROLS = "#request-form :is(input, select, textarea, button)"
UNLABELLED = """els => els.filter(el => el.offsetParent !== null && !el.disabled)
  .filter(el => el.tabIndex < 0
    || !(el.labels?.length || el.getAttribute('aria-label') || el.tagName === 'BUTTON'))
  .map(el => el.id)"""


async def test_the_keyboard_is_enough(page: Page) -> None:
    # Every visible control is reachable with Tab and has a name a screen reader can say.
    assert await page.eval_on_selector_all(CONTROLS, UNLABELLED) == []
    # Ctrl+Enter sends from the prompt, Escape stops.
    await page.fill("#f-max_tokens", "1500")
    await page.fill("#f-seed", "2")
    await page.focus("#prompt")
    await page.keyboard.type(LONG_PROMPT)
    await page.keyboard.press("Control+Enter")
    await page.wait_for_function("document.querySelector('#choices .text').textContent.length > 5")
    await page.keyboard.press("Escape")
    await page.wait_for_function("document.querySelector('#status').textContent.startsWith('Stopped')")
    await page.fill("#f-max_tokens", "4")
    await page.focus("#prompt")
    await page.keyboard.press("Control+Enter")
    await finished(page)


async def test_missing_endpoints_hide_their_modes(browser: Browser, live_server: LiveServer) -> None:
    page, watch = await open_page(browser, live_server)
    try:

        async def not_found(route: Route) -> None:
            await route.fulfill(
                status=404,
                json={
                    "error": {"message": "Not found.", "type": "not_found_error", "param": None, "code": None}
                },
            )

        for path in ("**/v1/presets*", "**/v1/conversations*", "**/v1/feedback/summary*"):
            await page.route(path, not_found)
        await page.reload()
        await page.wait_for_selector("body[data-ready='true']")
        assert await page.is_hidden("#tab-preset")
        assert await page.is_hidden("#tab-chat")
        assert await page.is_visible("#tab-generate")
        await ask(page, "Hi", max_tokens=3)
        await finished(page)
        assert await page.is_hidden("#feedback")
        assert not await page.is_visible("#error")
    finally:
        await page.context.close()
    assert not watch.errors, watch.errors


async def test_phone_sized_and_dark(browser: Browser, live_server: LiveServer, tmp_path: Path) -> None:
    # Under the page's own Content-Security-Policy: a violation would show up as a console error.
    page, watch = await open_page(browser, live_server, phone=True, dark=True, own_csp=True)
    try:
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "nothing overflows a phone screen sideways"
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(21, 23, 27)"  # the dark palette
        assert await page.get_attribute("#sampling", "open") is None  # folded, to keep things close
        await ask(page, "Hi", max_tokens=4)
        await finished(page)
        assert await page.is_visible("#meta")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390

        # Chat on a phone: the picture in the README.
        await page.click("#tab-chat")
        await page.click("#new-conversation")
        await page.fill("#message", "Hi! Can you recommend a good book?")
        await unfold_sampling(page)
        await page.fill("#f-max_tokens", "40")
        await page.fill("#f-seed", "4")
        await page.click("#sampling > summary")  # fold again
        await page.click("#send")
        await finished(page)
        assert await page.locator("#thread .msg").count() == 2
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.locator("#thread").scroll_into_view_if_needed()
        target = REPO / "docs" / "playground-phone-dark.png"
        if os.environ.get("UPDATE_SCREENSHOTS") != "1":
            target = tmp_path / target.name
        await page.screenshot(path=str(target))
    finally:
        await page.context.close()
    assert not watch.errors, watch.errors


async def test_screenshot_of_the_playground(page: Page, tmp_path: Path) -> None:
    """The picture in the README. Set UPDATE_SCREENSHOTS=1 to refresh docs/playground.png."""
    await page.fill("#system", "You are a poet.")
    await ask(page, "Write a short poem about the sea.", max_tokens=40, n=2, seed=42, temperature=0.9)
    await finished(page)
    target = REPO / "docs" / "playground.png"
    if os.environ.get("UPDATE_SCREENSHOTS") != "1":
        target = tmp_path / "playground.png"
    await page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 20_000
