"""Annotated dependency aliases: how routes reach the application state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.generation import GenerationService
from app.settings import Settings
from app.state import AppState

# `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool, a thread hop
# per dependency per request that cost more than everything these functions do.


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.genserve
    return state


async def get_settings(request: Request) -> Settings:
    state: AppState = request.app.state.genserve
    return state.settings


async def get_generation(request: Request) -> GenerationService:
    state: AppState = request.app.state.genserve
    return state.generation


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    state: AppState = request.app.state.genserve
    async with state.db.session() as session:
        yield session


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
