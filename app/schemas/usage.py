"""Wire models of usage reports (`GET /v1/usage`, `GET /admin/usage`)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

from app.schemas.keys import KeyLimits


class UsageRow(BaseModel):
    """One key's use of one model on one UTC day."""

    date: dt.date
    key_id: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    """Estimated from the model table's prices (per million tokens)."""


class UsageTotals(BaseModel):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0


class UsageReport(BaseModel):
    object: Literal["usage"] = "usage"
    start: dt.date | None
    end: dt.date | None
    data: list[UsageRow]
    totals: UsageTotals
    limits: KeyLimits | None = None
    """The caller's own limits (`GET /v1/usage` only)."""
