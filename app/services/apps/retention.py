"""Retention, expiry and erasure (issue 22): what is kept, for how long, and who deletes it.

- `Retention.cutoff(kind)`: the moment before which a kind's rows have expired (None: kept). Services
  check it when they read, so an expired row answers 404 the moment it expires, before any sweep.
- `Sweeper`: a registry of kinds (`SweepKind`: a name and `sweep(now, limit) -> int`) that one
  replica at a time (a lease row in the database) runs periodically, one bounded chunk per
  transaction: a sweep stopped by SIGTERM resumes on the next run; no lock is held for long.
- `Erasure`: a registry of kinds (`EraseKind`: `erase_owner(owner)`, `erase_user(user)`) that admin
  endpoints run to remove one key's or one end user's data, returning counts by kind.

App services that store data of their own (files, vector stores, batches) register a kind with
`Sweeper.register(ServiceKind(name, service.delete_expired))` and `Erasure.register(...)`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import Clocks, as_utc
from app.settings import Settings
from app.storage import retention as store
from app.storage.db import Database

log = logging.getLogger(__name__)

LEASE = "sweeper"
SQL_KINDS = ("records", "responses", "conversations", "usage", "probes")


@dataclass(frozen=True, slots=True)
class Retention:
    """Days per kind (0: kept) and the clock that says what has expired."""

    days: dict[str, int]
    clocks: Clocks

    @classmethod
    def from_settings(cls, settings: Settings, clocks: Clocks) -> Retention:
        return cls(
            {
                "records": settings.retain_records_days,
                "responses": settings.retain_responses_days,
                "conversations": settings.retain_conversations_days,
                "usage": settings.retain_usage_days,
                "feedback": settings.retain_feedback_days,
                "tuning": settings.retain_tuning_days,
                "probes": settings.retain_probes_days,
                "batch_output": settings.retain_batch_output_days,
            },
            clocks,
        )

    def cutoff(self, kind: str) -> datetime | None:
        """Rows of `kind` older than this have expired; None: this kind is kept."""
        days = self.days.get(kind, 0)
        return self.clocks.now() - timedelta(days=days) if days > 0 else None

    def expired(self, kind: str, moment: datetime | None) -> bool:
        """Whether a row of `kind` stamped `moment` has expired (naive moments are UTC)."""
        cutoff = self.cutoff(kind)
        return cutoff is not None and moment is not None and as_utc(moment) < cutoff


@dataclass(frozen=True, slots=True)
class EndUsers:
    """Keys end users by an HMAC of their `user` / `safety_identifier` under the server's
    pseudonym secret: rows can be found (and erased) by end user, yet the raw identifier (often an
    e-mail address) is never at rest, and cannot be recovered by hashing guesses."""

    secret: bytes

    def key(self, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return hmac.new(self.secret, b"end-user:" + value.encode(), hashlib.sha256).hexdigest()


class SweepKind(Protocol):
    """One kind of data the sweeper deletes when expired."""

    @property
    def name(self) -> str: ...

    async def sweep(self, now: datetime, limit: int) -> int:
        """Delete at most `limit` expired rows (with their blobs) in one transaction; the count."""
        ...


@dataclass(frozen=True, slots=True)
class SqlKind:
    """A kind stored in one of genserve's own tables, deleted by `delete(session, cutoff, limit)`."""

    name: str
    db: Database
    retention: Retention
    delete: Callable[[AsyncSession, datetime, int], Awaitable[int]]

    async def sweep(self, now: datetime, limit: int) -> int:
        days = self.retention.days.get(self.name, 0)
        if days <= 0:
            return 0
        async with self.db.session() as session, session.begin():
            return await self.delete(session, now - timedelta(days=days), limit)


async def _delete_usage(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    return await store.delete_usage(session, cutoff.date(), limit)


@dataclass(frozen=True, slots=True)
class ServiceKind:
    """A kind an app service owns (files, vector stores, batches): its `delete_expired(now, limit)`
    decides what has expired (their own `expires_at`) and deletes row and blob together."""

    name: str
    delete_expired: Callable[[int, int], Awaitable[int]]

    async def sweep(self, now: datetime, limit: int) -> int:
        return await self.delete_expired(int(now.timestamp()), limit)


@dataclass(slots=True)
class SweepReport:
    """What one sweep removed by kind, and whether this replica held the lease."""

    ran: bool
    removed: dict[str, int] = field(default_factory=dict)


class Sweeper:
    """Deletes expired rows kind by kind, chunk by chunk, under a lease only one replica holds."""

    def __init__(
        self,
        db: Database,
        clocks: Clocks,
        *,
        chunk: int = 1000,
        lease_seconds: float = 600.0,
        holder: str | None = None,
    ) -> None:
        self.db = db
        self.clocks = clocks
        self.chunk = chunk
        self.lease_seconds = lease_seconds
        self.holder = holder or f"sweeper-{secrets.token_hex(8)}"
        self.kinds: dict[str, SweepKind] = {}
        self._stop = asyncio.Event()

    def register(self, kind: SweepKind) -> None:
        """Add a kind (the name is its key: registering again replaces it)."""
        self.kinds[kind.name] = kind

    async def _lease(self) -> bool:
        now = self.clocks.now()
        async with self.db.session() as session, session.begin():
            return await store.take_lease(
                session,
                LEASE,
                self.holder,
                now=now,
                until=now + timedelta(seconds=self.lease_seconds),
                postgres=not self.db.is_sqlite,
            )

    async def sweep_once(self, *, max_chunks: int | None = None) -> SweepReport:
        """One sweep: take the lease (or return `ran=False` at once when another replica holds
        it), then delete chunk by chunk until nothing has expired. The lease is renewed before
        every chunk; losing it stops the sweep. `max_chunks` bounds the whole sweep (tests use it
        to stop one midway, as SIGTERM would)."""
        if not await self._lease():
            return SweepReport(ran=False)
        report = SweepReport(ran=True)
        chunks = 0
        try:
            for name, kind in self.kinds.items():
                report.removed[name] = 0
                while not self._stop.is_set():
                    if max_chunks is not None and chunks >= max_chunks:
                        return report
                    if chunks and not await self._lease():
                        return report
                    removed = await kind.sweep(self.clocks.now(), self.chunk)
                    chunks += 1
                    report.removed[name] += removed
                    if removed < self.chunk:
                        break
        finally:
            if max_chunks is None or chunks < max_chunks:
                async with self.db.session() as session, session.begin():
                    await store.release_lease(session, LEASE, self.holder)
        return report

    async def run(self, interval: float) -> None:
        """Sweep every `interval` seconds until `stop()`; a failed sweep is logged, not fatal."""
        while not self._stop.is_set():
            # The first sweep waits one interval: a start (or a rolling restart) stays light.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if self._stop.is_set():
                return
            try:
                report = await self.sweep_once()
                if report.ran and any(report.removed.values()):
                    log.info("retention sweep", extra={"removed": report.removed})
            except Exception:
                log.exception("retention sweep failed")

    def stop(self) -> None:
        self._stop.set()


def build_sweeper(settings: Settings, db: Database, clocks: Clocks, retention: Retention) -> Sweeper:
    """The sweeper with genserve's own tables registered; app services add theirs."""
    sweeper = Sweeper(
        db, clocks, chunk=settings.retention_sweep_chunk, lease_seconds=settings.retention_lease_seconds
    )
    deletes: dict[str, Callable[[AsyncSession, datetime, int], Awaitable[int]]] = {
        "records": store.delete_records,
        "responses": store.delete_responses,
        "conversations": store.delete_conversations,
        "usage": _delete_usage,
        "probes": store.delete_probes,
    }
    for name, delete in deletes.items():
        sweeper.register(SqlKind(name, db, retention, delete))
    return sweeper


class Erasure:
    """Removes what one key left behind: genserve's own tables in one transaction, then every
    registered app service's (`erase_owner(owner) -> count`: files, vector stores, batches)."""

    def __init__(self, db: Database, end_users: EndUsers) -> None:
        self.db = db
        self.end_users = end_users
        self.kinds: dict[str, Callable[[str], Awaitable[int]]] = {}

    def register(self, name: str, erase_owner: Callable[[str], Awaitable[int]]) -> None:
        self.kinds[name] = erase_owner

    async def erase_end_user(self, identifier: str) -> dict[str, int]:
        """Remove every row keyed to one end user (their `user` or `safety_identifier` was
        `identifier`), by kind, in one transaction. Usage totals stay (per key, no text)."""
        key = self.end_users.key(identifier)
        assert key is not None
        async with self.db.session() as session, session.begin():
            return await store.erase_end_user_rows(session, key)

    async def erase_owner(self, owner: str) -> dict[str, int]:
        """Counts of what was removed, by kind."""
        async with self.db.session() as session, session.begin():
            removed = await store.erase_owner_rows(session, owner)
        for name, erase in self.kinds.items():
            removed[name] = await erase(owner)
        return removed
