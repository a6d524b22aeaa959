"""Annotated dependency aliases: how routes reach the application state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.access import authenticate_client
from app.errors import AuthenticationFailed
from app.probes.service import ProbeService
from app.services.access import Access, current_access
from app.services.auth import Client
from app.services.conversations import ConversationService
from app.services.feedback import FeedbackService
from app.services.generation import GenerationService
from app.services.presets import PresetService
from app.services.responses import ResponseService
from app.settings import Settings
from app.state import AppState

# Every dependency is `async def` on purpose: FastAPI runs plain `def` dependencies in a thread
# pool, a thread hop per dependency per request that costs more than everything they do.


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.genserve
    return state


async def get_state(request: Request) -> AppState:
    return state_of(request)


async def get_settings(request: Request) -> Settings:
    return state_of(request).settings


async def get_generation(request: Request) -> GenerationService:
    return state_of(request).generation


async def get_presets(request: Request) -> PresetService:
    presets = state_of(request).presets
    assert presets is not None, "the lifespan sets up presets"
    return presets


async def get_feedback(request: Request) -> FeedbackService:
    feedback = state_of(request).feedback
    assert feedback is not None, "the lifespan sets up feedback"
    return feedback


async def get_conversations(request: Request) -> ConversationService:
    return state_of(request).conversations


async def get_probes(request: Request) -> ProbeService:
    return state_of(request).probes


async def get_responses(request: Request) -> ResponseService:
    return state_of(request).responses


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with state_of(request).db.session() as session:
        yield session


async def get_access(request: Request) -> Access:
    access = state_of(request).access
    assert access is not None, "the lifespan builds it"
    return access


async def get_client(_: Annotated[None, Depends(authenticate_client)]) -> Client:
    """The caller of a /v1 route (`anonymous` with auth_mode=none)."""
    ctx = current_access.get()
    if ctx is None or ctx.client is None:
        raise AuthenticationFailed("An API key is required.", code="missing_api_key")
    return ctx.client


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
PresetsDep = Annotated[PresetService, Depends(get_presets)]
FeedbackDep = Annotated[FeedbackService, Depends(get_feedback)]
ConversationsDep = Annotated[ConversationService, Depends(get_conversations)]
ResponsesDep = Annotated[ResponseService, Depends(get_responses)]
AccessDep = Annotated[Access, Depends(get_access)]
ClientDep = Annotated[Client, Depends(get_client)]
ProbesDep = Annotated[ProbeService, Depends(get_probes)]
