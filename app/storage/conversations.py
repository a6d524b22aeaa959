"""Conversation tables and the queries on them: conversations, and their numbered turns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    and_,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from app.clock import utcnow
from app.storage.base import Base


class ConversationRow(Base):
    """A conversation's settings. `turns` counts its stored messages and is the number every
    new turn is checked against, so two writers can never both append after the same turn."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model: Mapped[str] = mapped_column(String(200))
    system: Mapped[str | None] = mapped_column(Text)
    preset: Mapped[str | None] = mapped_column(String(100))
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sampling: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str] = mapped_column(String(64), index=True, default="anonymous")
    """The client key id that created it (`anonymous` without keys): only it sees the conversation."""
    tools: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    """Functions the assistant may call, in OpenAI's chat `tools` shape."""
    claim_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """Who is answering a message now (see `claim_turn`)."""
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """When that claim lapses if its holder never releases it (a crashed replica)."""


class MessageRow(Base):
    """One turn: the user's message or the assistant's reply, numbered from 1."""

    __tablename__ = "conversation_messages"

    conversation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    generation_id: Mapped[str | None] = mapped_column(String(100))
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    usage: Mapped[dict[str, int] | None] = mapped_column(JSON)
    tool_calls: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, default=None)
    """An assistant turn's calls: `[{id, name, arguments}]`."""
    tool_call_id: Mapped[str | None] = mapped_column(String(256), default=None)
    """A `tool` turn: the call whose result it holds."""


# -- queries ---------------------------------------------------------------------------------


async def get_conversation(
    session: AsyncSession, conversation_id: str, *, owner: str, lock: bool = False
) -> ConversationRow | None:
    """`owner`'s conversation, or None (also when it is someone else's). With
    `lock`, its row stays locked (PostgreSQL `FOR UPDATE`) until the session's transaction
    ends; SQLite has no row locks and ignores it."""
    query = select(ConversationRow).where(ConversationRow.id == conversation_id)
    query = query.where(ConversationRow.owner == owner)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def list_conversations(
    session: AsyncSession, *, limit: int, after: str | None, owner: str
) -> tuple[list[ConversationRow], bool] | None:
    """Newest first, `limit` at a time, starting after the conversation `after` (None when
    that conversation does not exist); only `owner`'s (never everyone's). Returns the page and whether
    more follow."""
    query = select(ConversationRow)
    query = query.where(ConversationRow.owner == owner)
    if after is not None:
        anchor = await get_conversation(session, after, owner=owner)
        if anchor is None:
            return None
        query = query.where(
            or_(
                ConversationRow.created_at < anchor.created_at,
                and_(ConversationRow.created_at == anchor.created_at, ConversationRow.id < after),
            )
        )
    query = query.order_by(ConversationRow.created_at.desc(), ConversationRow.id.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    return rows[:limit], len(rows) > limit


async def page_messages(
    session: AsyncSession, conversation_id: str, *, limit: int, before: int | None
) -> list[MessageRow]:
    """Up to `limit` messages just before turn `before` (default: the newest), oldest first."""
    query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
    if before is not None:
        query = query.where(MessageRow.seq < before)
    query = query.order_by(MessageRow.seq.desc()).limit(limit)
    rows = list((await session.execute(query)).scalars())
    rows.reverse()
    return rows


async def newest_messages(
    session: AsyncSession, conversation_id: str, *, before: int | None, limit: int
) -> Sequence[MessageRow]:
    """Messages newest first, `limit` at a time (for fitting history into a context window)."""
    query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
    if before is not None:
        query = query.where(MessageRow.seq < before)
    query = query.order_by(MessageRow.seq.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def claim_turn(
    session: AsyncSession, conversation_id: str, *, owner: str, claim_id: str, until: datetime
) -> bool:
    """Claim `owner`'s conversation for one reply until `until`, unless someone else holds an
    unexpired claim. The caller commits at once: no lock outlives this short transaction."""
    now = utcnow()
    result = await session.execute(
        update(ConversationRow)
        .where(
            ConversationRow.id == conversation_id,
            ConversationRow.owner == owner,
            or_(ConversationRow.claimed_until.is_(None), ConversationRow.claimed_until < now),
        )
        .values(claim_id=claim_id, claimed_until=until)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release_turn(session: AsyncSession, conversation_id: str, claim_id: str) -> None:
    """Give the claim back (only if it is still this one: a lapsed claim may be someone else's)."""
    await session.execute(
        update(ConversationRow)
        .where(ConversationRow.id == conversation_id, ConversationRow.claim_id == claim_id)
        .values(claim_id=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )


async def append_turns(
    session: AsyncSession, conversation: ConversationRow, messages: Sequence[MessageRow]
) -> bool:
    """Append `messages` after the conversation's last known turn, numbering them; False when
    the conversation changed meanwhile (deleted, or another writer appended first)."""
    expected = conversation.turns
    now = utcnow()
    result = await session.execute(
        update(ConversationRow)
        .where(ConversationRow.id == conversation.id, ConversationRow.turns == expected)
        .values(turns=expected + len(messages), updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    set_committed_value(conversation, "turns", expected + len(messages))
    set_committed_value(conversation, "updated_at", now)
    for offset, message in enumerate(messages, start=1):
        message.conversation_id = conversation.id
        message.seq = expected + offset
        message.created_at = now
        session.add(message)
    await session.flush()
    return True


async def delete_conversation(session: AsyncSession, conversation_id: str, *, owner: str) -> bool:
    """Delete `owner`'s conversation and its turns; False if there is none."""
    query = delete(ConversationRow).where(ConversationRow.id == conversation_id)
    query = query.where(ConversationRow.owner == owner)
    if (await session.execute(query)).rowcount != 1:  # type: ignore[attr-defined]
        return False
    # The foreign key cascades where it is enforced; SQLite enforces it only when asked to.
    await session.execute(delete(MessageRow).where(MessageRow.conversation_id == conversation_id))
    return True
