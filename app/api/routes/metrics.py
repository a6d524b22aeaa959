"""`GET /metrics`: every series in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from app.api.admission import require_metrics_token
from app.api.deps import MetricsDep
from app.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["observability"])


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
async def metrics(registry: MetricsDep) -> Response:
    return Response(registry.render(), media_type=CONTENT_TYPE)
