"""Retention at rest: the sweeper's lease, and deleting expired rows a bounded chunk at a time.

Every delete here removes at most `limit` rows in the caller's transaction: a chunk is final once
committed, so a sweep stopped between chunks (SIGTERM) resumes from what is left, and no
transaction holds its locks for long."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import DateTime, String, delete, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.base import Base
from app.storage.conversations import ConversationRow, MessageRow
from app.storage.probes import ProbeRow
from app.storage.responses import ResponseRow
from app.storage.tables import Feedback, GenerationRecord, UsageDaily


class RetentionLease(Base):
    """Which replica sweeps (`holder`) and until when, unless it renews."""

    __tablename__ = "retention_leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def _rows(result: object) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount or 0)


async def take_lease(
    session: AsyncSession, name: str, holder: str, *, now: datetime, until: datetime, postgres: bool
) -> bool:
    """Take (or renew) the lease `name` for `holder` when it is free, lapsed or already ours.
    Never waits for another replica: on PostgreSQL the row is read FOR UPDATE SKIP LOCKED (a
    replica taking it right now is skipped, not awaited); on SQLite the UPDATE is conditional.
    The caller commits."""
    query = select(RetentionLease.name).where(RetentionLease.name == name)
    if postgres:
        query = query.with_for_update(skip_locked=True)
    if await session.scalar(query) is None:
        if postgres and await session.scalar(select(RetentionLease.name).where(RetentionLease.name == name)):
            return False  # another replica holds the row locked right now: skipped, not awaited
        # First sweep ever: create the row; a replica that races us fails on the primary key.
        try:
            async with session.begin_nested():
                await session.execute(insert(RetentionLease).values(name=name, holder=holder, until=until))
        except IntegrityError:
            return False
        return True
    taken = await session.execute(
        update(RetentionLease)
        .where(
            RetentionLease.name == name,
            or_(RetentionLease.holder == holder, RetentionLease.until.is_(None), RetentionLease.until < now),
        )
        .values(holder=holder, until=until)
        .execution_options(synchronize_session=False)
    )
    return _rows(taken) == 1


async def release_lease(session: AsyncSession, name: str, holder: str) -> None:
    """Give the lease back (only if still ours). The caller commits."""
    await session.execute(
        update(RetentionLease)
        .where(RetentionLease.name == name, RetentionLease.holder == holder)
        .values(holder=None, until=None)
        .execution_options(synchronize_session=False)
    )


async def delete_records(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Up to `limit` generation records created before `cutoff` (their feedback goes with them)."""
    ids = select(GenerationRecord.id).where(GenerationRecord.created_at < cutoff).limit(limit)
    chosen = list(await session.scalars(ids))
    if not chosen:
        return 0
    await session.execute(delete(Feedback).where(Feedback.generation_id.in_(chosen)))
    return _rows(await session.execute(delete(GenerationRecord).where(GenerationRecord.id.in_(chosen))))


async def delete_responses(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Up to `limit` stored responses created before `cutoff`."""
    ids = select(ResponseRow.id).where(ResponseRow.created_at < cutoff).limit(limit)
    chosen = list(await session.scalars(ids))
    if not chosen:
        return 0
    return _rows(await session.execute(delete(ResponseRow).where(ResponseRow.id.in_(chosen))))


async def delete_conversations(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Up to `limit` conversations whose last message is older than `cutoff`, with their messages."""
    ids = select(ConversationRow.id).where(ConversationRow.updated_at < cutoff).limit(limit)
    chosen = list(await session.scalars(ids))
    if not chosen:
        return 0
    await session.execute(delete(MessageRow).where(MessageRow.conversation_id.in_(chosen)))
    return _rows(await session.execute(delete(ConversationRow).where(ConversationRow.id.in_(chosen))))


async def delete_probes(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Up to `limit` finished probes (reports) that finished before `cutoff`; running ones stay."""
    ids = (
        select(ProbeRow.id)
        .where(ProbeRow.finished_at.is_not(None), ProbeRow.finished_at < cutoff)
        .limit(limit)
    )
    chosen = list(await session.scalars(ids))
    if not chosen:
        return 0
    return _rows(await session.execute(delete(ProbeRow).where(ProbeRow.id.in_(chosen))))


async def delete_usage(session: AsyncSession, cutoff: date, limit: int) -> int:
    """Up to `limit` daily usage rows of days before `cutoff` (a composite key: deleted by day)."""
    query = select(UsageDaily.key_id, UsageDaily.model, UsageDaily.day).where(UsageDaily.day < cutoff)
    days = list(await session.execute(query.limit(limit)))
    removed = 0
    for key_id, model, day in days:
        removed += _rows(
            await session.execute(
                delete(UsageDaily).where(
                    UsageDaily.key_id == key_id, UsageDaily.model == model, UsageDaily.day == day
                )
            )
        )
    return removed


async def erase_end_user_rows(session: AsyncSession, key: str) -> dict[str, int]:
    """Delete the generation records (with their feedback) and stored responses whose `user` or
    `safety_identifier` hashed to `key`. The caller commits."""
    mine_r = or_(GenerationRecord.user_hash == key, GenerationRecord.safety_hash == key)
    await session.execute(
        delete(Feedback).where(Feedback.generation_id.in_(select(GenerationRecord.id).where(mine_r)))
    )
    mine_s = or_(ResponseRow.user_hash == key, ResponseRow.safety_hash == key)
    return {
        "records": _rows(await session.execute(delete(GenerationRecord).where(mine_r))),
        "responses": _rows(await session.execute(delete(ResponseRow).where(mine_s))),
    }


async def erase_owner_rows(session: AsyncSession, owner: str) -> dict[str, int]:
    """Delete every row of genserve's own tables that `owner` (a key id) left, by kind. Usage
    totals stay: billing needs them and they hold no text. The caller commits."""
    records = select(GenerationRecord.id).where(GenerationRecord.owner == owner)
    await session.execute(delete(Feedback).where(Feedback.generation_id.in_(records)))
    conversations = select(ConversationRow.id).where(ConversationRow.owner == owner)
    await session.execute(delete(MessageRow).where(MessageRow.conversation_id.in_(conversations)))
    return {
        "records": _rows(
            await session.execute(delete(GenerationRecord).where(GenerationRecord.owner == owner))
        ),
        "responses": _rows(await session.execute(delete(ResponseRow).where(ResponseRow.owner == owner))),
        "conversations": _rows(
            await session.execute(delete(ConversationRow).where(ConversationRow.owner == owner))
        ),
        "probes": _rows(await session.execute(delete(ProbeRow).where(ProbeRow.owner == owner))),
    }
