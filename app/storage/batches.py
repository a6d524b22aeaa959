"""Batches (`/v1/batches`) and their request lines, and the queries on them.

A batch's row is also its job: while it is `validating`, `finalizing` or `cancelling`, one
replica works on it under a lease (`leased_by`, `lease_until`). Every request line is a row of
`batch_lines` with its own status and result, written as soon as the line is answered; while the
batch is `in_progress`, replicas claim slices of pending lines under leases of their own, so
several replicas run one batch together, and a replica that dies leaves its lines' leases to run
out for another to claim: progress is durable and a finished line is never redone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.base import Base

LEASED = ("validating", "finalizing", "cancelling")
"""The statuses in which one replica works on the whole batch under the batch's lease (in
progress, replicas claim lines instead)."""


class BatchRow(Base):
    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_work", "status", "lease_until"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    """The key id that created it: only that key sees it, and its lines run as that key."""
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    output_expires_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    leased_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BatchLineRow(Base):
    """One request of a batch: its input, then its answer (`status` pending -> done)."""

    __tablename__ = "batch_lines"
    __table_args__ = (Index("ix_batch_lines_pending", "batch_id", "status", "seq"),)

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    """The line's number in the input file (1-based), the order of the output."""
    custom_id: Mapped[str] = mapped_column(String(512))
    body: Mapped[str] = mapped_column(Text)
    """The request body as JSON text (kept verbatim until the line is answered)."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The response body (JSON text) the endpoint returned for this request alone."""
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    leased_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """A pending line some replica runs now; when it runs out, another replica may claim it."""
