"""Helpers for the browser tests: the service on a loopback port, and pages that record what they do."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, ConsoleMessage, Page, Request

from app.main import create_app
from app.settings import Settings
from app.state import AppState

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class LiveServer:
    """The service, listening on `url`."""

    url: str
    app: FastAPI

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.genserve
        return state


@contextmanager
def serve(settings: Settings) -> Iterator[LiveServer]:
    """Run the service with uvicorn in a background thread (its own event loop)."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, held from now on: no race with other workers
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@dataclass
class Watch:
    """What the page did: its requests (to prove what was sent) and any script errors."""

    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def posted(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.split("?")[0].endswith(path)]


async def open_page(
    browser: Browser, server: LiveServer, *, phone: bool = False, dark: bool = False, own_csp: bool = False
) -> tuple[Page, Watch]:
    """A fresh browser context on the playground. Tests that run their own scripts in the page
    need `bypass_csp` (the page's policy forbids eval); `own_csp=True` keeps the real policy."""
    context = await browser.new_context(
        base_url=server.url,
        viewport={"width": 390, "height": 844} if phone else {"width": 1280, "height": 900},
        device_scale_factor=1,
        is_mobile=phone,
        has_touch=phone,
        color_scheme="dark" if dark else "light",
        reduced_motion="reduce",
        bypass_csp=not own_csp,
    )
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = await context.new_page()
    page.set_default_timeout(60_000)
    watch = Watch()
    page.on("request", lambda request: watch.requests.append(request))
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))

    def on_console(message: ConsoleMessage) -> None:
        # A 4xx answer logs "Failed to load resource" (tests check those answers themselves);
        # anything else logged as an error is a bug in the page.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            watch.errors.append(message.text)

    page.on("console", on_console)
    await page.goto("/")
    await page.wait_for_selector("body[data-ready='true']")
    return page, watch
