"""Annotated dependency aliases: how routes reach the application state and their request's context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.admission import authenticate_client
from app.api.middleware.context import OPTIONS, RESPONSE_HEADERS
from app.errors import AuthenticationFailed
from app.observability.metrics import Metrics
from app.services.apps.batches import BatchService
from app.services.apps.conversations import ConversationService
from app.services.apps.feedback import FeedbackService
from app.services.apps.files import FileService
from app.services.apps.presets.service import PresetService
from app.services.apps.probes.service import ProbeService
from app.services.apps.responses import ResponseService
from app.services.apps.vector_stores import VectorStoreService
from app.services.gateway.access import Access
from app.services.generation.caller import Client
from app.services.generation.context import RequestContext, RequestOptions
from app.services.generation.pipeline import GenerationService
from app.services.retrieval.embeddings import EmbeddingService
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
    return state_of(request).presets


async def get_feedback(request: Request) -> FeedbackService:
    return state_of(request).feedback


async def get_conversations(request: Request) -> ConversationService:
    return state_of(request).conversations


async def get_probes(request: Request) -> ProbeService:
    return state_of(request).probes


async def get_responses(request: Request) -> ResponseService:
    return state_of(request).responses


async def get_embeddings(request: Request) -> EmbeddingService:
    return state_of(request).embeddings


async def get_files(request: Request) -> FileService:
    return state_of(request).files


async def get_vector_stores(request: Request) -> VectorStoreService:
    return state_of(request).vector_stores


async def get_batches(request: Request) -> BatchService:
    return state_of(request).batches


async def get_metrics(request: Request) -> Metrics:
    return state_of(request).metrics


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with state_of(request).db.session() as session:
        yield session


async def get_access(request: Request) -> Access:
    return state_of(request).access


async def get_client(request: Request, _: Annotated[None, Depends(authenticate_client)]) -> Client:
    """The caller of a /v1 route (`anonymous` with auth_mode=none)."""
    client: Client | None = getattr(request.state, "caller", None)
    if client is None:  # deny by default: no rule let this request in
        raise AuthenticationFailed("An API key is required.", code="missing_api_key")
    return client


async def get_context(request: Request, client: Annotated[Client, Depends(get_client)]) -> RequestContext:
    """This request's `RequestContext`: its caller, the options its headers set, its id and
    deadline. It shares the options and response headers of the context middleware, so what the
    services report (cache hit, rate-limit state) reaches the response."""
    scope = request.scope.get("state", {})
    options = scope.get(OPTIONS)
    headers = scope.get(RESPONSE_HEADERS)
    state = state_of(request)
    return RequestContext(
        caller=client,
        options=options if options is not None else RequestOptions(),
        request_id=scope.get("request_id"),
        deadline=state.clocks.monotonic() + state.settings.upstream_deadline,
        headers=headers if headers is not None else {},
    )


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
PresetsDep = Annotated[PresetService, Depends(get_presets)]
FeedbackDep = Annotated[FeedbackService, Depends(get_feedback)]
ConversationsDep = Annotated[ConversationService, Depends(get_conversations)]
ResponsesDep = Annotated[ResponseService, Depends(get_responses)]
AccessDep = Annotated[Access, Depends(get_access)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ClientDep = Annotated[Client, Depends(get_client)]
ProbesDep = Annotated[ProbeService, Depends(get_probes)]
CtxDep = Annotated[RequestContext, Depends(get_context)]
EmbeddingsDep = Annotated[EmbeddingService, Depends(get_embeddings)]
FilesDep = Annotated[FileService, Depends(get_files)]
VectorStoresDep = Annotated[VectorStoreService, Depends(get_vector_stores)]
BatchesDep = Annotated[BatchService, Depends(get_batches)]
