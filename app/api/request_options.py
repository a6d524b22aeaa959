"""Reads the per-request option headers (`x-privacy-mode`, `Cache-Control`) for the service and
answers with `x-cache: hit|miss|bypass` when the response cache had a say."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services import request_options
from app.services.request_options import PRIVACY_HEADER, RequestOptions

_PRIVACY = PRIVACY_HEADER.encode()
_CACHE_CONTROL = b"cache-control"
_X_CACHE = b"x-cache"


class RequestOptionsMiddleware:
    """Pure ASGI: the endpoint runs in this task, so it sees the options this sets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        privacy: str | None = None
        cache_control: str | None = None
        for key, value in scope["headers"]:
            if key == _PRIVACY:
                privacy = value.decode("latin-1")
            elif key == _CACHE_CONTROL:
                cache_control = value.decode("latin-1")
        options = RequestOptions.from_headers(privacy, cache_control)

        async def send_with_cache_status(message: Message) -> None:
            if message["type"] == "http.response.start" and options.cache_status is not None:
                message["headers"] = [*message.get("headers", []), (_X_CACHE, options.cache_status.encode())]
            await send(message)

        token = request_options.activate(options)
        try:
            await self.app(scope, receive, send_with_cache_status)
        finally:
            request_options.deactivate(token)
