"""Generation records, their ratings, and the tuning evidence read from both."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.tables import Feedback, GenerationRecord

_RECORDS = cast(Table, GenerationRecord.__table__)


async def insert_records(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One INSERT for the whole batch (through the table, not the ORM's bulk path: less work per row)."""
    await session.execute(insert(_RECORDS), rows)
    await session.commit()


async def insert_new_records(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose id is not stored yet (a spool replayed after a crash)."""
    dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    await session.execute(dialect.insert(_RECORDS).on_conflict_do_nothing(index_elements=["id"]), rows)
    await session.commit()


EVERY_OWNER = None
"""`owner=EVERY_OWNER`: the admin's views, over every key's records."""


def _of(owner: str | None) -> tuple[Any, ...]:
    return () if owner is EVERY_OWNER else (GenerationRecord.owner == owner,)


async def preset_and_variant(
    session: AsyncSession, generation_id: str, *, owner: str
) -> tuple[str | None, str | None] | None:
    """The preset and tuning variant `owner`'s generation ran with; None when `owner` has no
    such record (someone else's is no different from a missing one)."""
    row = (
        await session.execute(
            select(GenerationRecord.preset, GenerationRecord.variant).where(
                GenerationRecord.id == generation_id, GenerationRecord.owner == owner
            )
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def upsert_rating(session: AsyncSession, values: dict[str, Any]) -> datetime:
    """Store a generation's rating, replacing an earlier one; returns when it was first rated."""
    dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(Feedback).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[Feedback.generation_id],
        set_={
            "rating": statement.excluded.rating,
            "score": statement.excluded.score,
            "comment": statement.excluded.comment,
            "updated_at": statement.excluded.updated_at,
        },
    ).returning(Feedback.created_at)
    created_at: datetime = (await session.execute(statement)).scalar_one()
    await session.commit()
    return created_at


async def rating_groups(
    session: AsyncSession, *, owner: str | None
) -> list[tuple[str | None, str | None, int, float, datetime, datetime]]:
    """Per preset and variant of `owner`'s generations: count, sum of scores, first and last
    rating time."""
    query = (
        select(
            GenerationRecord.preset,
            GenerationRecord.variant,
            func.count(),
            func.sum(Feedback.score),
            func.min(Feedback.updated_at),
            func.max(Feedback.updated_at),
        )
        .join(GenerationRecord, GenerationRecord.id == Feedback.generation_id)
        .where(*_of(owner))
        .group_by(GenerationRecord.preset, GenerationRecord.variant)
    )
    return [
        (preset, variant, int(count), float(total or 0), first, last)
        for preset, variant, count, total, first, last in (await session.execute(query)).all()
    ]


async def variant_ratings(
    session: AsyncSession, preset: str, *, owner: str | None = EVERY_OWNER
) -> dict[str, tuple[int, float]]:
    """Per tuning variant of `preset`: how many tuned generations were rated, and their scores'
    sum (every key's: the tuning learns from all of them; a key's report passes its own)."""
    query = (
        select(GenerationRecord.variant, func.count(), func.sum(Feedback.score))
        .join(Feedback, Feedback.generation_id == GenerationRecord.id)
        .where(GenerationRecord.preset == preset, GenerationRecord.tuned.is_(True), *_of(owner))
        .group_by(GenerationRecord.variant)
    )
    rows = (await session.execute(query)).all()
    return {variant: (int(n), float(total or 0.0)) for variant, n, total in rows if variant}


async def variant_choices(
    session: AsyncSession, preset: str, *, recent: int, owner: str | None
) -> tuple[dict[str | None, int], list[str | None]]:
    """How often each variant of `preset` was chosen for `owner`, and the `recent` newest choices."""
    tuned = (GenerationRecord.preset == preset, GenerationRecord.tuned.is_(True), *_of(owner))
    counts = (
        await session.execute(
            select(GenerationRecord.variant, func.count()).where(*tuned).group_by(GenerationRecord.variant)
        )
    ).all()
    latest = (
        await session.execute(
            select(GenerationRecord.variant)
            .where(*tuned)
            .order_by(GenerationRecord.created_at.desc())
            .limit(recent)
        )
    ).scalars()
    return {variant: int(n) for variant, n in counts}, list(latest)
