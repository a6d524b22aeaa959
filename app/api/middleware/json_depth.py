"""Refuse JSON bodies nested deeper than `MAX_JSON_DEPTH` with 400 and OpenAI's error body.

Deeply nested values (`metadata`, a `response_format` schema) cost recursion wherever they are
parsed, copied or serialized (the response cache's key raised past 254 levels). A body with few
brackets cannot be deep and passes untouched; otherwise it is parsed once with orjson and its
containers walked iteratively, so the check itself never recurses.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import InvalidRequest, PayloadTooLarge, app_error_response

MAX_JSON_DEPTH = 64
"""Deepest nesting of objects and arrays accepted in a request body."""


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON in `body` nests more than `limit` levels (or cannot be read as JSON
    and has more brackets than that)."""
    if body.count(b"{") + body.count(b"[") <= limit:
        return False
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


class JsonDepthMiddleware:
    """Pure ASGI: reads a JSON request's body, checks it, then hands the same bytes on."""

    def __init__(self, app: ASGIApp, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        if b"json" not in content_type.lower():
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            try:
                message = await receive()
            except HTTPException as exc:  # the body limit, met while reading
                await app_error_response(PayloadTooLarge(str(exc.detail)))(scope, receive, send)
                return
            if message["type"] != "http.request":  # the client left: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if too_deep(body, self.max_depth):
            error = InvalidRequest(
                f"The request body is not valid JSON or is nested more than {self.max_depth} levels deep.",
                code="invalid_json",
            )
            await app_error_response(error)(scope, receive, send)
            return
        await self.app(
            scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send
        )


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
