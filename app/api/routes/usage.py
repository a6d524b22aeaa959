"""`GET /v1/usage`: the calling key's own usage and estimated cost."""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.api.deps import AccessDep, ClientDep
from app.api.render.keys import usage_report
from app.schemas.usage import IsoDate, UsageReport

router = APIRouter(tags=["usage"])


@router.get("/v1/usage")
async def own_usage(
    access: AccessDep,
    client: ClientDep,
    model: str | None = None,
    start: IsoDate | None = Query(default=None, description="First UTC day (inclusive)."),
    end: IsoDate | None = Query(default=None, description="Last UTC day (inclusive)."),
) -> UsageReport:
    """Requests, tokens and estimated cost per model and day for the key making this request."""
    rows = await access.usage.query(key_id=client.key_id, model=model, start=start, end=end)
    return usage_report(rows, start, end, client.limits)
