"""End-to-end fixtures: the real service with the embedded model on a loopback port, and
headless Chromium (Debian's package, driven by Python playwright) to drive the playground."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from app.settings import Settings
from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, LiveServer, Watch, open_page, serve


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service, started once for all browser tests."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        log_level="WARNING",
        provider="local",
        data_dir=tmp_path_factory.mktemp("e2e-data"),
    )
    with serve(settings) as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does it)")
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page_and_watch(browser: Browser, live_server: LiveServer) -> AsyncIterator[tuple[Page, Watch]]:
    page, watch = await open_page(browser, live_server)
    try:
        yield page, watch
    finally:
        await page.context.close()
    assert not watch.errors, watch.errors


@pytest.fixture
def page(page_and_watch: tuple[Page, Watch]) -> Page:
    return page_and_watch[0]


@pytest.fixture
def watch(page_and_watch: tuple[Page, Watch]) -> Watch:
    return page_and_watch[1]
