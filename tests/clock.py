"""A clock that tests move by hand: every TTL, cooldown and expiry of an app built with
`create_app(settings, clocks=clock.clocks)` reads it, so no test sleeps to wait for time."""

from __future__ import annotations

import time

from app.clock import Clocks


class ManualClock:
    def __init__(self) -> None:
        self._monotonic = 1_000.0
        self._wall = time.time()
        self.clocks = Clocks(monotonic=lambda: self._monotonic, wall=lambda: self._wall)

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._wall += seconds
