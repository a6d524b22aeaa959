"""Table definitions (SQLAlchemy 2 declarative). Every table change comes with an Alembic revision."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.base import Base

# --- generation records and feedback (issue 3) ------------------------------------------------


class GenerationRecord(Base):
    """One row per generation, from any endpoint: what was asked, what was used, what it cost.
    Prompt and output text are kept only when `store_text` is on."""

    __tablename__ = "generation_records"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The response's `id`, which clients send back with their feedback."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """The client key that made the generation (`anonymous` without keys)."""
    user_hash: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """HMAC of the request's `user` under the pseudonym secret (never the raw value): erasure."""
    safety_hash: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """HMAC of the request's `safety_identifier`, likewise."""
    preset: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str] = mapped_column(String(32))
    sampling: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The effective sampling settings, seed included."""
    tuned: Mapped[bool] = mapped_column(Boolean, default=False)
    variant: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[float] = mapped_column(Float)
    total_ms: Mapped[float] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    aborted: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The response's `metadata` (summarize stages, turns left out, ...)."""
    prompt: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    """The messages sent, as [{role, content}] (only with store_text)."""
    output: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """Each choice's text (only with store_text)."""

    __table_args__ = (Index("ix_generation_records_preset_variant", "preset", "tuned", "variant"),)


class Feedback(Base):
    """A user's rating of one generation; a second rating replaces the first."""

    __tablename__ = "feedback"

    generation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("generation_records.id", ondelete="CASCADE"), primary_key=True
    )
    rating: Mapped[str] = mapped_column(String(8))
    """As sent: "up", "down", or "1".."5"."""
    score: Mapped[float] = mapped_column(Float)
    """Normalized to 0..1: up=1, down=0, r stars → (r-1)/4."""
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


# --- client keys and usage (issue 4) ---------------------------------------------------------


class ApiKey(Base):
    """A client key. Only the SHA-256 of the secret is kept; `hint` helps people tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    allowed_presets: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class UsageDaily(Base):
    """Requests, tokens and estimated cost per key, per model, per (UTC) day."""

    __tablename__ = "usage_daily"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True, index=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)


class SpoolApplied(Base):
    """A spooled usage batch already added to `usage_daily` (app/storage/spool.py): applied once."""

    __tablename__ = "spool_applied"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
