"""The playground's token probabilities (hover, keyboard, branching) and its bias probe page,
in headless Chromium against the real service and embedded model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.async_api import Page, Route

from tests.e2e.harness import REPO, Watch

pytestmark = pytest.mark.slow


async def unfold_sampling(page: Page) -> None:
    if await page.get_attribute("#sampling", "open") is None:
        await page.click("#sampling > summary")


async def ask_with_probabilities(page: Page, prompt: str, **fields: object) -> None:
    await page.fill("#prompt", prompt)
    await unfold_sampling(page)
    await page.check("#show-probs")
    for name, value in fields.items():
        await page.fill(f"#f-{name}", str(value))
    await page.click("#send")
    await page.wait_for_selector("#meta:not([hidden])")


def target(name: str, tmp_path: Path) -> Path:
    """docs/<name> with UPDATE_SCREENSHOTS=1, else a scratch file."""
    path = REPO / "docs" / name
    return path if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / name


async def test_tokens_are_tinted_and_show_their_alternatives_on_hover_and_keyboard(
    page: Page, watch: Watch
) -> None:
    await ask_with_probabilities(page, "Name a fruit.", max_tokens=12, temperature=0, n=2)
    (sent,) = watch.posted("/v1/generate")
    body = json.loads(sent.post_data or "{}")
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 5
    # n = 2, side by side, both with their tokens (streamed: the default).
    cards = page.locator("#choices .choice")
    assert await cards.count() == 2
    for i in range(2):
        tokens = cards.nth(i).locator(".tok")
        assert await tokens.count() > 1
        text = await cards.nth(i).locator(".text").text_content()
        assert "".join(await tokens.all_text_contents()) == text
        summary = await cards.nth(i).locator(".probs-summary").text_content()
        assert "perplexity" in (summary or "")
    first = cards.nth(0).locator(".tok").first
    p = float(await first.get_attribute("data-p") or "nan")
    assert 0 < p <= 1

    # Hover: the top 5 alternatives, with percentages, the chosen one first (temperature 0).
    await first.hover()
    pop = page.locator("#tok-pop")
    await pop.wait_for(state="visible")
    assert await pop.locator("li").count() == 5
    items = await pop.locator("li").all_text_contents()
    assert all("%" in item for item in items)
    assert json.dumps(await first.text_content()) in items[0]

    # Keyboard: focus a token, move with the arrows, open the list with Enter, close with Esc.
    await first.focus()
    await page.keyboard.press("ArrowRight")
    second = cards.nth(0).locator(".tok").nth(1)
    assert await second.evaluate("el => el === document.activeElement")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.classList.contains('alt')")
    await page.keyboard.press("Escape")
    await pop.wait_for(state="hidden")
    assert await second.evaluate("el => el === document.activeElement")


async def test_picking_an_alternative_branches_into_a_new_choice(
    page: Page, watch: Watch, tmp_path: Path
) -> None:
    await ask_with_probabilities(page, "Name a fruit.", max_tokens=12, temperature=0, seed=1)
    original = page.locator("#choices .choice").first
    tokens = original.locator(".tok")
    before = "".join((await tokens.all_text_contents())[:2])
    await tokens.nth(2).click()
    pop = page.locator("#tok-pop")
    await pop.wait_for(state="visible")
    alternative = pop.locator("button.alt").nth(1)
    alt_token = json.loads((await alternative.text_content() or "").rsplit(" ", 1)[0])
    await alternative.click()
    branch = page.locator("#choices .choice.branch")
    await branch.wait_for()
    await page.wait_for_selector("#choices .choice.branch .probs-summary")
    sent = json.loads(watch.posted("/v1/generate")[-1].post_data or "{}")
    assert sent["continue_from"] == before + alt_token
    assert sent["n"] == 1
    text = await branch.locator(".text").text_content() or ""
    assert text.startswith(before + alt_token)
    assert len(text) > len(before + alt_token)
    assert await branch.locator(".prefix").text_content() == before + alt_token
    assert await branch.locator(".tok").count() >= 1
    # Next to the original, which is unchanged.
    assert await page.locator("#choices .choice").nth(1).get_attribute("class") == "choice branch"
    await tokens.nth(2).hover()
    await pop.wait_for(state="visible")
    await page.screenshot(path=str(target("probabilities.png", tmp_path)), full_page=True)


async def test_where_a_model_cannot_branch_the_page_says_why(page: Page) -> None:
    async def no_continuation(route: Route) -> None:
        response = await route.fetch()
        data = await response.json()
        for card in data["data"]:
            card["continuation"] = False
            card["continuation_note"] = "This model continues only whole chat turns."
        await route.fulfill(response=response, json=data)

    await page.route("**/v1/models", no_continuation)
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    await ask_with_probabilities(page, "Say hi.", max_tokens=6, temperature=0)
    await page.locator("#choices .tok").first.hover()
    pop = page.locator("#tok-pop")
    await pop.wait_for(state="visible")
    assert await pop.locator("button.alt").count() == 0
    assert await pop.locator("li").count() == 5
    assert "only whole chat turns" in (await pop.text_content() or "")


async def test_the_probe_page_runs_a_suite_with_a_progress_bar(
    page: Page, watch: Watch, tmp_path: Path
) -> None:
    await page.click("#tab-probe")
    await page.select_option("#probe-suite", "gender-names-en")
    assert "{name}" in await page.input_value("#probe-template")
    await page.fill("#probe-samples", "2")
    await unfold_sampling(page)
    await page.fill("#f-max_tokens", "12")
    await page.fill("#f-seed", "7")
    await page.evaluate(
        """() => {
          window.progressSeen = [];
          const bar = document.querySelector('#probe-progress');
          new MutationObserver(() => window.progressSeen.push(bar.value)).observe(bar, {attributes: true});
        }"""
    )
    await page.click("#send")
    await page.wait_for_selector("#probe-verdict", timeout=300_000)
    sent = json.loads(watch.posted("/v1/probes/bias")[0].post_data or "{}")
    assert sent["suite"] == "gender-names-en"
    assert sent["samples"] == 2
    assert sent["max_tokens"] == 12
    seen = await page.evaluate("window.progressSeen")
    assert max(seen) == 4
    assert len(set(seen)) >= 2  # it moved while the probe ran
    assert await page.locator("#probe-progress").get_attribute("max") == "4"
    assert await page.locator(".probe-chart svg").count() == 4
    assert await page.locator(".probe-chart rect").count() == 8
    assert await page.locator(".probe-table tbody tr").count() == 2
    verdict = await page.text_content("#probe-verdict") or ""
    assert "n = 2" in verdict
    await page.screenshot(path=str(target("bias-probe.png", tmp_path)), full_page=True)


async def test_a_running_probe_can_be_cancelled_from_the_page(page: Page, watch: Watch) -> None:
    await page.click("#tab-probe")
    await page.select_option("#probe-suite", "ages-en")
    await page.fill("#probe-samples", "20")
    await unfold_sampling(page)
    await page.fill("#f-max_tokens", "8")
    await page.click("#send")
    await page.wait_for_selector("#probe-cancel:not([disabled])")
    await page.click("#probe-cancel")
    await page.wait_for_selector("#probe-report .probe-verdict")
    assert "cancelled" in (await page.text_content("#probe-report") or "")
    assert "cancelled" in (await page.text_content("#probe-progress-text") or "")
    assert watch.posted("/cancel")
