"""Usage and estimated cost per key, per model, per UTC day.

Counts are added up in memory and written in one short transaction every `usage_flush_seconds`
(and before every read, and at shutdown), so accounting costs a request a dictionary update, not
a database round trip. Writes are upserts that add to the stored row, so any number of replicas
can flush into the same table. A flush the database cannot take (down, read-only) goes to the
spool on disk as one batch with its own id, applied once (`spool_applied`) when the spool drains:
a replica killed meanwhile loses nothing, and a replay never adds twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from app.clock import Clocks
from app.errors import ServiceUnavailable
from app.providers.base import Usage
from app.settings import ModelRoute
from app.storage import usage as usage_rows
from app.storage.db import Database
from app.storage.spool import Spool, SpoolFull
from app.storage.tables import UsageDaily

log = logging.getLogger("genserve.usage")


def cost(route: ModelRoute, usage: Usage) -> float:
    """Estimated cost of one generation from the model table's prices (per million tokens)."""
    return (
        usage.prompt_tokens * route.input_price_per_mtok
        + usage.completion_tokens * route.output_price_per_mtok
    ) / 1_000_000


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add(self, other: _Counts) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost


def _items(batch: dict[tuple[str, str, date], _Counts]) -> list[list[Any]]:
    """A batch as rows (key, model, day, requests, prompt, completion, cost), in key order: the
    shape written to the table and to the spool alike."""
    return [
        [k, m, d, c.requests, c.prompt_tokens, c.completion_tokens, c.cost]
        for (k, m, d), c in sorted(batch.items())
    ]


class UsageRecorder:
    """Buffers usage in memory and writes it to `usage_daily`."""

    def __init__(
        self, db: Database, flush_seconds: float, clocks: Clocks | None = None, spool: Spool | None = None
    ) -> None:
        self._db = db
        self._spool = spool
        if spool is not None:
            spool.register("usage", self._store_spooled)
        self._clocks = clocks or Clocks()
        self.flush_seconds = flush_seconds
        self._pending: dict[tuple[str, str, date], _Counts] = {}
        self._lock = asyncio.Lock()

    def add(self, key_id: str, model: str, usage: Usage, cost: float, *, at: datetime | None = None) -> None:
        day = (at or self._clocks.now()).date()
        counts = self._pending.setdefault((key_id, model, day), _Counts())
        counts.add(_Counts(1, usage.prompt_tokens, usage.completion_tokens, cost))

    async def flush(self) -> None:
        """Write what has been counted so far; on failure it stays pending for the next try."""
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            items = _items(batch)
            try:
                async with self._db.session() as session:
                    await usage_rows.add_rows(session, items)
                    await session.commit()
            except ServiceUnavailable:
                if self._spool is not None:
                    try:
                        await self._spool.append("usage", [{"items": items}])
                        return
                    except SpoolFull:
                        log.error("the spool is full: usage waits in memory")
                self._restore(batch)
                raise
            except BaseException:
                self._restore(batch)
                raise

    def _restore(self, batch: dict[tuple[str, str, date], _Counts]) -> None:
        """Put a batch that was not written back with what was counted meanwhile."""
        for k, counts in batch.items():
            self._pending.setdefault(k, _Counts()).add(counts)

    async def _store_spooled(self, pairs: list[tuple[str, Any]]) -> None:
        """Spooled batches, each added once: its id is claimed in the same transaction."""
        async with self._db.session() as session:
            for batch_id, payload in pairs:
                if not await usage_rows.claim_batch(session, batch_id, self._clocks.now()):
                    continue
                await usage_rows.add_rows(session, payload["items"])
            await session.commit()

    async def run(self) -> None:
        """Flush periodically until cancelled (the lifespan flushes once more at shutdown)."""
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:
                log.warning("writing usage failed; will retry", exc_info=True)

    async def aclose(self, task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def query(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> list[UsageDaily]:
        """Rows in date order, newest counts included (this replica's pending ones are written first)."""
        await self.flush()
        async with self._db.session() as session:
            return await usage_rows.query(session, key_id=key_id, model=model, start=start, end=end)
