"""`GET /metrics`: every series in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.observability.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["observability"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)
