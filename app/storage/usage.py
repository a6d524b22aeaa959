"""Usage rows per key, model and UTC day: upserts that add up, so every replica can write."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.tables import SpoolApplied, UsageDaily


async def add(
    session: AsyncSession,
    *,
    key_id: str,
    model: str,
    day: date,
    requests: int,
    prompt_tokens: int,
    completion_tokens: int,
    cost: float,
) -> None:
    """Add these counts to the day's row (creating it when it is the first)."""
    insert: Any = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
    stmt = insert(UsageDaily).values(
        key_id=key_id,
        model=model,
        day=day,
        requests=requests,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=cost,
    )
    new = stmt.excluded
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[UsageDaily.key_id, UsageDaily.model, UsageDaily.day],
            set_={
                "requests": UsageDaily.requests + new.requests,
                "prompt_tokens": UsageDaily.prompt_tokens + new.prompt_tokens,
                "completion_tokens": UsageDaily.completion_tokens + new.completion_tokens,
                "cost": UsageDaily.cost + new.cost,
            },
        )
    )


async def add_rows(session: AsyncSession, rows: Sequence[Sequence[Any]]) -> None:
    """`add` for each (key_id, model, day, requests, prompt_tokens, completion_tokens, cost)."""
    for key_id, model, day, requests, prompt_tokens, completion_tokens, cost in rows:
        await add(
            session,
            key_id=key_id,
            model=model,
            day=day,
            requests=requests,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=cost,
        )


async def query(
    session: AsyncSession,
    *,
    key_id: str | None = None,
    model: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[UsageDaily]:
    """Rows in date order, filtered by whichever of key, model and day range is given."""
    q = select(UsageDaily).order_by(UsageDaily.day, UsageDaily.key_id, UsageDaily.model)
    if key_id is not None:
        q = q.where(UsageDaily.key_id == key_id)
    if model is not None:
        q = q.where(UsageDaily.model == model)
    if start is not None:
        q = q.where(UsageDaily.day >= start)
    if end is not None:
        q = q.where(UsageDaily.day <= end)
    return list((await session.execute(q)).scalars())


async def claim_batch(session: AsyncSession, batch_id: str, at: datetime) -> bool:
    """Mark a spooled batch applied; False when it already was (its counts are in already)."""
    insert: Any = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
    result = await session.execute(
        insert(SpoolApplied)
        .values(id=batch_id, applied_at=at)
        .on_conflict_do_nothing(index_elements=[SpoolApplied.id])
        .returning(SpoolApplied.id)
    )
    return result.first() is not None
