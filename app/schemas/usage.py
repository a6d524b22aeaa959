"""Wire models of usage reports (`GET /v1/usage`, `GET /admin/usage`)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator

from app.schemas.keys import KeyLimits

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: Any) -> Any:
    """Only `YYYY-MM-DD`: pydantic would also read `0` as 1970-01-01."""
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]
"""A UTC day in a query (`start`, `end`)."""


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
