"""Refuse request bodies larger than `max_body_bytes` with 413 and OpenAI's error body.

FastAPI's own `max_body_size` answers a too-large `Content-Length` with a plain-text 413 that
replaces any response the app builds, so clients would not get `{"error": {...}}`.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, app_error_response


class BodyLimitMiddleware:
    """Pure ASGI: checks `Content-Length` up front and counts chunked bodies as they arrive."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.per_path = per_path or {}
        """Paths whose bodies may be larger (uploads), by exact path."""

    @staticmethod
    def _error(limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than {limit} bytes.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_body_bytes)
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await app_error_response(self._error(limit))(scope, receive, send)
                    return
                break
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPExceptions from body reading; the error handlers
                    # turn this one into PayloadTooLarge's body.
                    raise HTTPException(413, detail=self._error(limit).message)
            return message

        await self.app(scope, receive_limited, send)
