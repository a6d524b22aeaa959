"""Stored responses of the Responses API, and the queries on them.

A response keeps its own input items and output items; `previous_response_id` links it to the
response it continued, so a conversation is the chain walked back from its newest response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.base import Base


class ResponseRow(Base):
    """One stored response. Items are kept in the Responses API's own item shapes."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    """The client key id that created it (`anonymous` without keys): only it sees the response."""
    user_hash: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """HMAC of the request's `user` under the pseudonym secret (never the raw value): erasure."""
    safety_hash: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """HMAC of the request's `safety_identifier`, likewise."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    previous_response_id: Mapped[str | None] = mapped_column(String(64))
    """The response this one continued. No foreign key: deleting a response leaves the ones
    that continued it readable (their context then starts after the gap)."""
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    """What the request asked for (instructions, sampling, tools, metadata, ...)."""
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    output: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    usage: Mapped[dict[str, int]] = mapped_column(JSON)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    """This service's own facts: provider, effective sampling, timings, metadata."""


async def get_response(session: AsyncSession, response_id: str, *, owner: str) -> ResponseRow | None:
    """The response, or None when there is none with this id that `owner` may see."""
    query = select(ResponseRow).where(ResponseRow.id == response_id, ResponseRow.owner == owner)
    return (await session.execute(query)).scalar_one_or_none()


async def add_response(session: AsyncSession, row: ResponseRow) -> None:
    session.add(row)
    await session.flush()


async def delete_response(session: AsyncSession, response_id: str, *, owner: str) -> bool:
    """Delete `owner`'s response; False when there was none."""
    query = delete(ResponseRow).where(ResponseRow.id == response_id, ResponseRow.owner == owner)
    return bool((await session.execute(query)).rowcount == 1)  # type: ignore[attr-defined]
