"""The playground's files as served: the page at `/`, its assets, and nothing from elsewhere."""

from __future__ import annotations

import re

import httpx
import pytest

ASSETS = ("app.js", "style.css", "favicon.svg")


async def test_the_page_and_its_assets_are_served(local_client: httpx.AsyncClient) -> None:
    page = await local_client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ASSETS:
        assert f"playground/{asset}" in page.text
        r = await local_client.get(f"/playground/{asset}")
        assert r.status_code == 200, asset
        assert r.headers["content-type"].split(";")[0] in ("text/javascript", "text/css", "image/svg+xml")
    head = await local_client.head("/")
    assert head.status_code == 200


@pytest.mark.parametrize("path", ["/playground/../settings.py", "/playground/index.html", "/playground/x.js"])
async def test_only_the_known_assets_are_served(local_client: httpx.AsyncClient, path: str) -> None:
    r = await local_client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


async def test_nothing_is_loaded_from_another_origin(local_client: httpx.AsyncClient) -> None:
    """The service must work offline: no CDN, no web fonts, no analytics."""
    for path in ("/", *(f"/playground/{a}" for a in ASSETS)):
        text = (await local_client.get(path)).text
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>)]*", text)
        # The only absolute URL allowed is the SVG namespace, which is a name, not a fetch.
        assert set(urls) <= {"http://www.w3.org/2000/svg", "//www.w3.org/2000/svg"}, (path, urls)


async def test_the_page_is_not_in_the_api_schema(local_client: httpx.AsyncClient) -> None:
    paths = (await local_client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/playground") for p in paths)
