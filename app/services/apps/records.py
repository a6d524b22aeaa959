"""Generation records: a hook that writes one row per generation, off the response's path.

The hook only queues the row; one writer task inserts queued rows in batches: a row waits up to
`records_flush_seconds` for the ones after it, so that under load one INSERT and one commit carry
hundreds of rows. A failing database is retried with backoff while rows wait in memory, up to
`max_pending` of them; past that, new rows are dropped (counted, with a warning) rather than
making a response wait for the database. With a spool (app/storage/spool.py), a batch the
database cannot take (down, read-only) goes to the replica's disk instead, and so does every
batch while the spool holds rows (their order is kept); the spool's drain writes them back.
Shutdown drains the queue. Feedback on an id still in the queue flushes it first
(`RecordWriter.flush`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.clock import Clocks
from app.errors import ServiceUnavailable
from app.providers.base import Choice, Message
from app.services.apps.retention import EndUsers
from app.services.generation.pipeline import JobHook, Outcome
from app.storage import records as record_rows
from app.storage.db import Database
from app.storage.spool import Spool, SpoolFull

log = logging.getLogger("genserve.records")

_BATCH = 500
_MAX_BACKOFF = 5.0


def record_row(
    outcome: Outcome, *, store_text: bool, now: datetime, end_users: EndUsers | None = None
) -> dict[str, Any]:
    """The `generation_records` row for a finished (or aborted) generation; with `end_users`,
    keyed (by HMAC, never the raw value) to the end user the request named."""
    job = outcome.job
    completion = outcome.completion
    first = completion.choices[0] if completion.choices else None
    return {
        "id": job.id,
        # When the generation started (outcome.created is only whole seconds).
        "created_at": now - timedelta(milliseconds=outcome.total_ms),
        "endpoint": job.endpoint,
        "owner": job.ctx.owner,
        "user_hash": end_users.key(job.end_user) if end_users else None,
        "safety_hash": end_users.key(job.safety_identifier) if end_users else None,
        "preset": job.preset,
        "model": job.model,
        "provider": job.provider.name,
        "sampling": job.request.sampling.as_dict(),
        "tuned": job.tuned,
        "variant": job.variant,
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
        "ttft_ms": round(outcome.ttft_ms, 2),
        "total_ms": round(outcome.total_ms, 2),
        "finish_reason": None if outcome.aborted or first is None else first.finish_reason,
        "aborted": outcome.aborted,
        "meta": dict(job.metadata),
        "prompt": [_message(m) for m in job.request.as_messages()] if store_text else None,
        # The prompt was redacted in place; the answer was restored for the client: conceal it.
        "output": [_output(c, job.conceal) for c in completion.choices] if store_text else None,
    }


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _output(choice: Choice, conceal: Callable[[str], str] | None) -> str | dict[str, Any]:
    """A choice's text (concealed as the privacy mode asks); a choice that called tools as its
    text and its calls."""
    text = conceal(choice.text) if conceal is not None else choice.text
    if not choice.tool_calls:
        return text
    return {
        "text": text,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in choice.tool_calls],
    }


class RecordWriter:
    """Inserts queued record rows in the background; `flush()` waits until all are stored."""

    def __init__(
        self, db: Database, *, linger: float = 0.0, max_pending: int = 10_000, spool: Spool | None = None
    ) -> None:
        self._db = db
        self._spool = spool
        if spool is not None:
            spool.register("record", self._store_spooled)
        self._spool_full = False
        self._linger = linger
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max_pending)
        self._hurry = asyncio.Event()
        """Set when waiting for more rows would only delay someone: a full batch, a flush."""
        self._task: asyncio.Task[None] | None = None
        self.dropped_total = 0
        """Rows dropped because `max_pending` rows were already waiting."""
        self._dropping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="genserve-record-writer")

    def put(self, row: dict[str, Any]) -> None:
        """Queue a row, or drop it when `max_pending` rows are already waiting: a response
        never waits for the database."""
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self.dropped_total += 1
            if not self._dropping:  # once per episode, not once per request
                log.warning(
                    "generation records dropped: %d are waiting for the database", self._queue.maxsize
                )
            self._dropping = True
            return
        self._dropping = False
        if self._queue.qsize() >= _BATCH:
            self._hurry.set()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def flush(self, within: float = 10.0) -> None:
        """Wait until every row queued so far is in the database (at most `within` seconds)."""
        self._hurry.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), within)

    async def aclose(self, within: float = 30.0) -> None:
        """Drain the queue, then stop the writer."""
        if self._task is None:
            return
        await self.flush(within)
        if self._queue.qsize():
            log.error("shutting down with %d generation records not stored", self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger and not self._hurry.is_set():
                # Let the rows of the next moments join this one: the commit, not the row, is
                # what costs (a batch of 16 costs 3x per row what a batch of 200 does).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger):
                        await self._hurry.wait()
            if self._queue.qsize() < _BATCH:
                self._hurry.clear()  # a flush waiting on these rows is answered when they are in
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._insert(batch)
            for _ in batch:
                self._queue.task_done()

    async def _store_spooled(self, pairs: list[tuple[str, Any]]) -> None:
        async with self._db.session() as session:
            await record_rows.insert_new_records(session, [row for _, row in pairs])

    async def _to_spool(self, batch: list[dict[str, Any]]) -> bool:
        if self._spool is None:
            return False
        try:
            await self._spool.append("record", batch)
        except SpoolFull:
            if not self._spool_full:
                log.error("the spool is full: %d generation records wait in memory", len(batch))
            self._spool_full = True
            return False
        self._spool_full = False
        return True

    async def _insert(self, batch: list[dict[str, Any]]) -> None:
        delay = 0.05
        while True:
            # Rows already spooled go first: a batch joins them rather than overtake them.
            if self._spool is not None and self._spool.rows and await self._to_spool(batch):
                return
            try:
                async with self._db.session() as session:
                    await record_rows.insert_records(session, batch)
                return
            except IntegrityError:
                # Retrying cannot help a row the database refuses (an id already stored):
                # store the others one by one and report the refused ones.
                if len(batch) == 1:
                    log.error("generation record %s refused by the database", batch[0]["id"])
                    return
                for row in batch:
                    await self._insert([row])
                return
            except ServiceUnavailable:
                if await self._to_spool(batch):
                    return
                log.warning("storing %d generation records failed; retrying in %.2fs", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
            except Exception:
                log.exception("storing %d generation records failed; retrying in %.2fs", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)


class RecordHook(JobHook):
    """Queues a record for every generation that produced an outcome (aborted streams included)."""

    def __init__(
        self,
        writer: RecordWriter,
        *,
        store_text: bool,
        clocks: Clocks | None = None,
        end_users: EndUsers | None = None,
    ) -> None:
        self._writer = writer
        self._end_users = end_users
        self._store_text = store_text
        self._clocks = clocks or Clocks()

    async def on_finish(self, outcome: Outcome) -> None:
        row = record_row(
            outcome, store_text=self._store_text, now=self._clocks.now(), end_users=self._end_users
        )
        self._writer.put(row)
