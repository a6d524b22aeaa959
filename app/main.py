"""The app factory and its lifespan: the only place where things are wired together."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from app.api.access import AccessMiddleware, authenticate_client
from app.api.body_limit import BodyLimitMiddleware
from app.api.json_depth import JsonDepthMiddleware
from app.api.request_options import RequestOptionsMiddleware
from app.api.routes import (
    admin,
    chat,
    conversations,
    feedback,
    generate,
    health,
    models,
    playground,
    presets,
    usage,
)
from app.api.routes import metrics as metrics_endpoint
from app.errors import register_error_handlers
from app.observability.metrics import Metrics
from app.observability.request_id import RequestIdMiddleware
from app.observability.requests import ObservabilityHook, ObservabilityMiddleware
from app.providers.base import Provider
from app.services.access import open_access
from app.services.conversations import ConversationService
from app.services.feedback_loop import open_feedback_loop
from app.services.generation import GenerationService, JobHook
from app.services.limits import RATE_LIMIT_HEADERS
from app.services.safeguards import Safeguards
from app.settings import Settings
from app.state import AppState
from app.storage.db import Database

log = logging.getLogger("genserve")


async def build_providers(settings: Settings) -> dict[str, Provider]:
    """Instantiate (and start) the providers the model table refers to."""
    providers: dict[str, Provider] = {}
    in_use = settings.providers_in_use()
    if "openai" in in_use:
        from app.providers import openai as openai_provider

        providers["openai"] = openai_provider.build(settings)
    if "local" in in_use:
        from app.providers import local

        provider = local.build(settings)
        await provider.start()
        providers["local"] = provider
    return providers


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. Nothing is opened until the lifespan starts."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            db = Database(settings.resolved_database_url)
            stack.push_async_callback(db.aclose)
            if settings.database_auto_migrate:
                await db.migrate()
            redis: Redis | None = None
            if settings.redis_url:
                redis = Redis.from_url(settings.redis_url)
                stack.push_async_callback(redis.aclose)
            providers = await build_providers(settings)
            for provider in providers.values():
                stack.push_async_callback(provider.aclose)
            if "local" in providers:
                local_provider = providers["local"]
                metrics.watch_local_queue(lambda: getattr(local_provider, "queue_depth", 0))
            access = await stack.enter_async_context(open_access(settings, db, redis, metrics))
            # Observability sees every job (refusals included, through on_error); then keys and
            # limits: a refused job never reaches the hooks after them.
            hooks: list[JobHook] = [ObservabilityHook(metrics), access.hook]
            safeguards = Safeguards.build(settings, providers, redis)
            metrics.watch_safeguards(safeguards)
            generation = GenerationService(settings, providers, hooks, runner=safeguards)
            app.state.genserve = AppState(
                settings=settings,
                providers=providers,
                generation=generation,
                started_at=int(time.time()),
                db=db,
                conversations=ConversationService(
                    db, generation, lock_timeout=settings.conversation_lock_timeout
                ),
                redis=redis,
                access=access,
                safeguards=safeguards,
                metrics=metrics,
            )
            await open_feedback_loop(app.state.genserve, stack)
            app.state.genserve.conversations.presets = app.state.genserve.presets
            yield

    app = FastAPI(
        title="genserve",
        version="0.1.0",
        summary="Text generation over HTTP: OpenAI-compatible, online or fully offline.",
        lifespan=lifespan,
        # Every /v1 route, including routers added later, learns its caller here.
        dependencies=[Depends(authenticate_client)],
    )
    register_error_handlers(app)
    app.state.metrics = metrics
    for router in (
        generate.router,
        chat.router,
        conversations.router,
        models.router,
        health.router,
        presets.router,
        feedback.router,
        metrics_endpoint.router,
        playground.router,
    ):
        app.include_router(router)
    app.include_router(usage.router)
    app.include_router(admin.router)
    app.add_middleware(JsonDepthMiddleware)  # inside the body limit: it reads only what that allows
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-request-id", "retry-after", "x-cache", *RATE_LIMIT_HEADERS],
        )
    app.add_middleware(AccessMiddleware)
    app.add_middleware(RequestOptionsMiddleware)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
