"""Client keys' rows: look-up by digest, listing, and the admin's changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.tables import ApiKey


async def by_digest(session: AsyncSession, digest: str) -> ApiKey | None:
    result = await session.execute(select(ApiKey).where(ApiKey.secret_hash == digest))
    return result.scalar_one_or_none()


async def get(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def add(session: AsyncSession, row: ApiKey) -> None:
    session.add(row)
    await session.commit()


async def all_keys(session: AsyncSession, *, include_revoked: bool) -> list[ApiKey]:
    """Newest first."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.execute(query)).scalars())


async def update(session: AsyncSession, key_id: str, changes: dict[str, Any]) -> ApiKey | None:
    """Set the given columns; None when there is no such key."""
    row = await session.get(ApiKey, key_id)
    if row is None:
        return None
    for column, value in changes.items():
        setattr(row, column, value)
    await session.commit()
    return row


async def revoke(session: AsyncSession, key_id: str, at: datetime) -> ApiKey | None:
    """Mark the key revoked (once: a second revoke keeps the first time); None when unknown."""
    row = await session.get(ApiKey, key_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = at
        await session.commit()
    return row
