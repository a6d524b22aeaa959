"""Server-sent events and client disconnects.

Streams answer `data: {json}\n\n` frames and end with `data: [DONE]`. The first item is awaited
before the response starts, so errors that happen before any text (a full queue, an upstream
429) still get their proper HTTP status. After that, a failure becomes a final error event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.sse import EventSourceResponse

from app.api.sse_response import CoalescingEventSourceResponse
from app.errors import AppError, ClientDisconnected, UpstreamTimeout, error_body

log = logging.getLogger("genserve.streaming")
T = TypeVar("T")

DONE_FRAME = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def frame(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_frame(exc: BaseException) -> bytes:
    if isinstance(exc, AppError):
        return frame(exc.body())
    log.error("stream failed", exc_info=exc)
    return frame(error_body("The stream failed.", "api_error", None, "stream_error"))


async def sse_response(
    items: AsyncIterator[T], render: Callable[[T], list[bytes]], request: Request | None = None
) -> EventSourceResponse:
    """Start a stream once its first item exists; `render` turns each item into frames.
    With `request`, a client that leaves while the first item is awaited (say, queued for the
    local model) stops the work there and then, instead of holding its place in the queue."""
    try:
        if request is None:
            first = await anext(items)
        else:
            first = await until_disconnected(request, anext(items))
    except StopAsyncIteration:
        first = None
    except BaseException:
        await items.aclose()  # type: ignore[attr-defined]
        raise

    settings = request.app.state.genserve.settings if request is not None else None
    idle = settings.stream_idle_timeout if settings is not None else None

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(items):  # type: ignore[type-var]
            try:
                if first is not None:
                    for chunk in render(first):
                        yield chunk
                    while True:
                        try:
                            async with asyncio.timeout(idle):
                                item = await anext(items)
                        except StopAsyncIteration:
                            break
                        for chunk in render(item):
                            yield chunk
            except TimeoutError:
                yield error_frame(
                    UpstreamTimeout(
                        f"The stream was idle for {idle:g} s and was ended.", code="stream_idle_timeout"
                    )
                )
            except Exception as exc:  # after headers: tell the client instead of cutting
                yield error_frame(exc)
            yield DONE_FRAME

    return CoalescingEventSourceResponse(
        body(),
        headers=SSE_HEADERS,
        write_timeout=settings.stream_write_timeout if settings is not None else None,
    )


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client goes away first (so generation stops).

    The work runs in this task; one watcher task cancels it when the disconnect arrives (a task
    for the work as well, and `asyncio.wait` on both, cost more per request than the watcher)."""
    current = asyncio.current_task()
    assert current is not None, "called from a request's task"
    gone = False

    async def cancel_when_gone() -> None:
        nonlocal gone
        await _wait_disconnect(request)
        gone = True
        current.cancel()

    watcher = asyncio.ensure_future(cancel_when_gone())
    try:
        result = await work  # the work cleans up (releases its queue place) as it is cancelled
    except BaseException as exc:
        if gone:
            current.uncancel()
            raise ClientDisconnected("The client went away before the answer was ready.") from exc
        raise
    finally:
        watcher.cancel()
    if gone:  # the work finished as the client left, and swallowed the cancellation
        current.uncancel()
        raise ClientDisconnected("The client went away before the answer was ready.")
    return result


async def _wait_disconnect(request: Request) -> None:
    # Once the body has been read, the next ASGI message can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
