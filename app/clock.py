"""Time, in one place: the clock type that anything with a TTL, cooldown or expiry takes (so
tests move time instead of sleeping), and UTC helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import overload

Clock = Callable[[], float]
"""Seconds on a monotonic scale (`time.monotonic` in production, a settable value in tests)."""


@dataclass(frozen=True, slots=True)
class Clocks:
    """The two clocks the service reads: `create_app(settings, clocks=...)` hands them down."""

    monotonic: Clock = time.monotonic
    """For durations: TTLs, cooldowns, cache lifetimes."""
    wall: Clock = time.time
    """For calendar time: key expiry, per-minute and per-day windows."""

    def now(self) -> datetime:
        """The wall clock as an aware UTC datetime."""
        return datetime.fromtimestamp(self.wall(), UTC)

    def unix(self) -> int:
        """The wall clock in whole seconds (OpenAI's `created` fields)."""
        return int(self.wall())


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A datetime in UTC: naive values (SQLite hands them back; clients may send them) are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def unix(moment: datetime) -> int:
    """Whole seconds since the epoch, a naive `moment` read as UTC."""
    return int(as_utc(moment).timestamp())
