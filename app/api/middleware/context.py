"""The HTTP side of a request's context: one pure ASGI middleware reads the request id and the
option headers (`x-privacy-mode`, `Cache-Control`) into the request's state, and sends back
`x-request-id`, `x-cache` and the rate-limit headers the services left on the context.

The `RequestContext` itself is built by the `get_context` dependency (app/api/deps.py) once the
caller is known; it shares the options and the header dict created here.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.request_id import HEADER as REQUEST_ID_HEADER
from app.observability.request_id import request_id_of
from app.services.generation.context import PRIVACY_HEADER, RequestOptions

_PRIVACY = PRIVACY_HEADER.encode()
_CACHE_CONTROL = b"cache-control"
_X_CACHE = b"x-cache"

OPTIONS = "genserve.options"
RESPONSE_HEADERS = "genserve.response_headers"
REQUEST_ID = "request_id"


class RequestContextMiddleware:
    """Pure ASGI (no extra task, no body buffering); the outermost layer."""

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
        extra: dict[str, str] = {}
        request_id = request_id_of(scope)
        state = scope.setdefault("state", {})
        state[REQUEST_ID] = request_id
        state[OPTIONS] = options
        state[RESPONSE_HEADERS] = extra
        raw_id = request_id.encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, raw_id)]
                if options.cache_status is not None:
                    headers.append((_X_CACHE, options.cache_status.encode()))
                if extra:
                    present = {name.lower() for name, _ in headers}
                    for name, value in extra.items():
                        raw = name.encode("latin-1")
                        if raw not in present:
                            headers.append((raw, value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
