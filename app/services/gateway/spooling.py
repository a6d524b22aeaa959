"""The spool's two policies: refuse generations only when it is full, and write it back when the
database answers again (app/storage/spool.py keeps the rows)."""

from __future__ import annotations

import asyncio
import logging

from app.errors import ServiceUnavailable
from app.services.generation.pipeline import Job, JobHook
from app.storage.spool import Spool

log = logging.getLogger("genserve.spool")

SPOOL_RETRY_AFTER = 5.0
"""Seconds a client is told to wait when the spool is full: the database must come back first."""


class SpoolGuard(JobHook):
    """Refuses a job while the spool is full: its record and usage would have nowhere to go."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self.refused_total = 0

    async def on_start(self, job: Job) -> None:
        if self._spool.full:
            self.refused_total += 1
            raise ServiceUnavailable(
                "The database is unavailable and this replica's spool is full; try again shortly.",
                code="spool_full",
                retry_after=SPOOL_RETRY_AFTER,
            )


async def drain_forever(spool: Spool, interval: float) -> None:
    """Try to write the spool back every `interval` seconds while it holds rows (until cancelled)."""
    failing = False
    while True:
        if spool.rows:
            try:
                await spool.drain()
                failing = False
            except Exception:
                if not failing:  # once per outage, not once per try
                    log.warning("the spool cannot be written yet (%d rows wait)", spool.rows, exc_info=True)
                failing = True
        await asyncio.sleep(interval)
