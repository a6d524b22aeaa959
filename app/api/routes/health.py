"""`GET /healthz` (the process is alive) and `GET /readyz` (the providers can serve)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    checks = {name: await provider.ready() for name, provider in state.providers.items()}
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "providers": checks},
        status_code=200 if ready else 503,
    )
