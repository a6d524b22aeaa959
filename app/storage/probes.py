"""The probes table and the queries on it: one row per probe run, with its progress and report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow
from app.storage.base import Base

#: A probe in one of these states will not change any more.
FINAL_STATES = ("succeeded", "failed", "cancelled")


class ProbeRow(Base):
    """A probe: what was asked, how far it got, and its report once finished."""

    __tablename__ = "probes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    """The client key id that started it (`anonymous` without keys): only it sees the probe."""
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    """queued, running, succeeded, failed or cancelled."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The effective request: the suite's template and groups resolved, the base seed chosen."""
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """Renewed by the replica running the probe while it is queued or running: a heartbeat older
    than the lease means that replica is gone. Rows from before the lease have none (`updated_at`
    stands in)."""


#: What the owner reads on a probe whose replica stopped without finishing it.
INTERRUPTED = "Interrupted: the replica running this probe stopped before it finished; start it again."
ACTIVE_STATES = ("queued", "running")


async def insert_probe(session: AsyncSession, row: ProbeRow, *, now: datetime) -> None:
    """Store a new probe; `now` (the service's clock) starts its heartbeat."""
    row.created_at = row.updated_at = utcnow()
    row.heartbeat_at = now
    session.add(row)
    await session.flush()


async def get_probe(session: AsyncSession, probe_id: str, *, owner: str) -> ProbeRow | None:
    query = select(ProbeRow).where(ProbeRow.id == probe_id, ProbeRow.owner == owner)
    return (await session.execute(query)).scalar_one_or_none()


async def list_probes(session: AsyncSession, *, owner: str, limit: int) -> Sequence[ProbeRow]:
    """The owner's newest probes first."""
    query = (
        select(ProbeRow)
        .where(ProbeRow.owner == owner)
        .order_by(ProbeRow.created_at.desc(), ProbeRow.id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def count_active(session: AsyncSession, *, owner: str) -> int:
    query = select(ProbeRow.id).where(ProbeRow.owner == owner, ProbeRow.status.in_(ACTIVE_STATES))
    return len(list((await session.execute(query)).scalars()))


async def set_progress(session: AsyncSession, probe_id: str, *, done: int) -> bool:
    """Record progress on a probe still running; False when it has been cancelled (or is gone)."""
    result = await session.execute(
        update(ProbeRow)
        .where(ProbeRow.id == probe_id, ProbeRow.status.in_(ACTIVE_STATES))
        .values(status="running", done=done, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def finish(
    session: AsyncSession,
    probe_id: str,
    *,
    status: str,
    report: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Move a probe that is not finished yet to a final state; False when it already was."""
    now = utcnow()
    result = await session.execute(
        update(ProbeRow)
        .where(ProbeRow.id == probe_id, ProbeRow.status.not_in(FINAL_STATES))
        .values(status=status, report=report, error=error, updated_at=now, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def renew(session: AsyncSession, probe_id: str, *, now: datetime) -> bool:
    """Renew the heartbeat of a probe still queued or running; False once it has ended."""
    result = await session.execute(
        update(ProbeRow)
        .where(ProbeRow.id == probe_id, ProbeRow.status.in_(ACTIVE_STATES))
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def fail_abandoned(session: AsyncSession, *, owner: str, now: datetime, lease: float) -> int:
    """Fail the owner's probes whose heartbeat is older than the lease; how many were failed.

    One conditional UPDATE: a probe still active *and* still stale at the moment of writing, so a
    replica that renews in between keeps its probe, and two replicas sweeping at once fail it once.
    """
    stale = now - timedelta(seconds=lease)
    heartbeat = func.coalesce(ProbeRow.heartbeat_at, ProbeRow.updated_at)
    abandoned = (ProbeRow.owner == owner, ProbeRow.status.in_(ACTIVE_STATES), heartbeat < stale)
    # Reads poll this (the playground's progress bar): look before taking a write lock.
    if (await session.execute(select(ProbeRow.id).where(*abandoned).limit(1))).first() is None:
        return 0
    result = await session.execute(
        update(ProbeRow)
        .where(*abandoned)
        .values(status="failed", error=INTERRUPTED, updated_at=utcnow(), finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
