"""Waiting for a condition, not for time: poll until it holds, with a bound that fails the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(condition: Callable[[], Awaitable[bool] | bool], *, within: float = 10.0) -> None:
    """Return as soon as `condition()` is true; fail after `within` seconds of it being false."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition did not hold within {within} s")
        await asyncio.sleep(0.01)
