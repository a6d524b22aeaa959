"""The streaming response: the same bytes in the same order; a burst of frames leaves in one write,
paced frames leave one by one as they come, and a client that is gone stops the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from app.api.sse_response import CoalescingEventSourceResponse

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "method": "POST"}


async def never_disconnects() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def frames(n: int) -> list[bytes]:
    return [f'data: {{"i": {i}}}\n\n'.encode() for i in range(n)]


async def run(body: AsyncIterator[bytes], log: list[str] | None = None) -> list[bytes]:
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])
            if log is not None and message["body"]:
                log.append(f"sent {message['body'].count(b'data:')}")

    await CoalescingEventSourceResponse(body)(SCOPE, never_disconnects, send)
    return sent


async def test_a_burst_of_frames_leaves_in_one_write() -> None:
    async def burst() -> AsyncIterator[bytes]:
        for f in frames(50):
            yield f

    sent = await run(burst())
    assert b"".join(sent) == b"".join(frames(50))
    # The first frame at once (time to first byte), the other 49 together, then the end.
    assert len(sent) == 3
    assert sent[-1] == b""


async def test_paced_frames_leave_as_they_come() -> None:
    log: list[str] = []

    async def paced() -> AsyncIterator[bytes]:
        for f in frames(5):
            log.append("produced")
            yield f
            await asyncio.sleep(0.01)

    sent = await run(paced(), log)
    assert b"".join(sent) == b"".join(frames(5))
    # Every frame is written before the next one is produced: no frame waits for company.
    assert log == ["produced", "sent 1"] * 5


async def test_a_client_that_is_gone_stops_the_stream() -> None:
    produced = 0
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield b"data: {}\n\n"
                await asyncio.sleep(0)
        finally:
            closed.set()

    writes = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal writes
        if message["type"] == "http.response.body":
            writes += 1
            if writes > 3:
                raise OSError("connection reset by peer")

    body = endless()
    with pytest.raises(ClientDisconnect):
        await CoalescingEventSourceResponse(body)(SCOPE, never_disconnects, send)
    await body.aclose()
    assert closed.is_set()
    assert produced < 100


async def test_a_client_that_leaves_stops_the_stream_under_asgi_2_3() -> None:
    """uvicorn speaks ASGI 2.3: writes after a disconnect do not fail, the disconnect message
    is what stops the stream (and the response ends quietly, as Starlette's does)."""
    produced = 0
    closed = asyncio.Event()
    left = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        try:
            while True:
                produced += 1
                if produced == 10:
                    left.set()
                yield b"data: {}\n\n"
                await asyncio.sleep(0)
        finally:
            closed.set()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    scope = {**SCOPE, "asgi": {"version": "3.0", "spec_version": "2.3"}}
    body = endless()
    await CoalescingEventSourceResponse(body)(scope, receive, send)
    await body.aclose()
    assert closed.is_set()
    assert 10 <= produced < 100
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_stream_that_ends_under_asgi_2_3_sends_everything() -> None:
    async def burst() -> AsyncIterator[bytes]:
        for f in frames(50):
            yield f

    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    scope = {**SCOPE, "asgi": {"version": "3.0", "spec_version": "2.3"}}
    await CoalescingEventSourceResponse(burst())(scope, never_disconnects, send)
    assert b"".join(sent) == b"".join(frames(50))
    assert sent[-1] == b""
