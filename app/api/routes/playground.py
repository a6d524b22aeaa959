"""`GET /`: the playground, a static page (HTML, CSS, JS; no build step) that drives the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import NotFound

router = APIRouter(tags=["playground"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "probes.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page talks only to the service that serves it: nothing from a CDN, nothing inline.
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidate every time (cheap: ETag), so an upgraded service never runs a stale script.
    "cache-control": "no-cache",
}


@router.api_route("/", methods=["GET", "HEAD"])
async def playground() -> FileResponse:
    """The playground page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.api_route("/playground/{asset}", methods=["GET", "HEAD"])
async def playground_asset(asset: str) -> FileResponse:
    """The page's script, stylesheet and icon."""
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFound(f"No playground asset named '{asset}'.")
    return FileResponse(STATIC_DIR / asset, media_type=media_type, headers=HEADERS)
