"""The admin API's bodies for keys and usage, built from their stored rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from datetime import datetime

from app.clock import as_utc
from app.schemas.keys import KeyInfo, KeyLimits
from app.schemas.usage import UsageReport, UsageRow, UsageTotals
from app.services.gateway.keys import key_status
from app.services.generation.caller import Limits
from app.storage.tables import ApiKey, UsageDaily


def _ts(value: datetime | None) -> int | None:
    value = as_utc(value)
    return int(value.timestamp()) if value is not None else None


def key_limits(limits: Limits) -> KeyLimits:
    return KeyLimits(**limits.as_dict())


def key_info(row: ApiKey, at: dt.datetime) -> KeyInfo:
    """A key as the admin API shows it; `at` is now, by the key store's clock (its status)."""
    return KeyInfo(
        id=row.id,
        name=row.name,
        hint=row.hint,
        status=key_status(row, at),
        created_at=_ts(row.created_at) or 0,
        expires_at=_ts(row.expires_at),
        revoked_at=_ts(row.revoked_at),
        limits=key_limits(Limits.of(row)),
        allowed_models=row.allowed_models,
        allowed_presets=row.allowed_presets,
    )


def usage_report(
    rows: Sequence[UsageDaily], start: dt.date | None, end: dt.date | None, limits: Limits | None = None
) -> UsageReport:
    data = [
        UsageRow(
            date=r.day,
            key_id=r.key_id,
            model=r.model,
            requests=r.requests,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            total_tokens=r.prompt_tokens + r.completion_tokens,
            cost=round(r.cost, 8),
        )
        for r in rows
    ]
    totals = UsageTotals(
        requests=sum(r.requests for r in data),
        prompt_tokens=sum(r.prompt_tokens for r in data),
        completion_tokens=sum(r.completion_tokens for r in data),
        total_tokens=sum(r.total_tokens for r in data),
        cost=round(sum(r.cost for r in data), 8),
    )
    return UsageReport(
        start=start,
        end=end,
        data=data,
        totals=totals,
        limits=key_limits(limits) if limits is not None else None,
    )
