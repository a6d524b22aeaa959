"""Per-request observability: a pure ASGI middleware that times every request (streams to their
last byte), feeds the metrics and writes one access log line; and a `JobHook` that adds what the
generation knows (model, provider, tokens, time to first token) to the same request's record.

Other features annotate the current request with `annotate(cache="hit", retries=2, ...)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError, AuthenticationFailed, PermissionDenied, RateLimited
from app.observability.metrics import Metrics
from app.services.generation import Job, JobHook, Outcome
from app.services.limits import LimitReached

access_log = logging.getLogger("genserve.access")

#: Probes and scrapes are logged at DEBUG only, so they do not drown the requests that matter.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestRecord:
    """What one access log line says. Never holds prompt text or credentials."""

    __slots__ = ("fields",)

    def __init__(self, request_id: str | None, method: str, route: str) -> None:
        self.fields: dict[str, Any] = {"request_id": request_id, "method": method, "route": route}


_current: ContextVar[RequestRecord | None] = ContextVar("genserve_request", default=None)


def current_request() -> RequestRecord | None:
    """The record of the request being handled, if any."""
    return _current.get()


def annotate(**fields: Any) -> None:
    """Add facts to the current request's log line (e.g. `cache="hit"`, `retries=2`,
    `key_id=...`). Ignored outside a request. Never pass prompt text or secrets."""
    record = _current.get()
    if record is not None:
        record.fields.update(fields)


class ObservabilityMiddleware:
    """Pure ASGI: no extra task and no body buffering (unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The request id is known once the context middleware inside this one has run.
        state = scope.setdefault("state", {})
        record = RequestRecord(None, scope["method"], "")
        token = _current.set(record)
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", ()):
                    if key == b"x-cache":
                        record.fields["cache"] = value.decode("latin-1")
            await send(message)

        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.observe_request(scope["method"], template, status, seconds)
            fields = record.fields
            fields["request_id"] = state.get("request_id")
            fields["route"] = template
            fields["status"] = status
            fields["latency_ms"] = round(seconds * 1000, 2)
            level = logging.DEBUG if template in QUIET_ROUTES else logging.INFO
            if access_log.isEnabledFor(level):
                access_log.log(level, "request", extra={"fields": fields})
            _current.reset(token)


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, AppError):
        return exc.code or exc.type
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal_error"


class ObservabilityHook(JobHook):
    """Feeds generation metrics and adds the job's facts to the request's log line."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def on_start(self, job: Job) -> None:
        record = _current.get()
        if record is not None:
            record.fields.update(
                endpoint=job.endpoint, model=job.model, provider=job.provider.name, generation_id=job.id
            )
            # Counts and flags only: tool names and arguments are the request's text.
            if job.request.tools:
                record.fields["tools"] = len(job.request.tools)
            if job.request.logprobs is not None:
                record.fields["logprobs"] = job.request.logprobs

    async def on_finish(self, outcome: Outcome) -> None:
        job, usage = outcome.job, outcome.completion.usage
        self.metrics.observe_generation(
            job.endpoint,
            job.provider.name,
            job.model,
            seconds=outcome.total_ms / 1000,
            ttft_seconds=outcome.ttft_ms / 1000,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            aborted=outcome.aborted,
        )
        calls = sum(len(c.tool_calls) for c in outcome.completion.choices)
        if calls:
            self.metrics.tool_calls.labels(job.model).inc(calls)
        record = _current.get()
        if record is not None:
            record.fields.update(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                ttft_ms=round(outcome.ttft_ms, 2),
                upstream_ms=round(outcome.total_ms, 2),
            )
            if outcome.aborted:
                record.fields["aborted"] = True
            if calls:
                record.fields["tool_calls"] = calls
            _job_facts(record, job)

    async def on_error(self, job: Job, exc: BaseException) -> None:
        code = _error_code(exc)
        record = _current.get()
        if record is not None:
            record.fields["error"] = code
            _job_facts(record, job)
        if _is_refusal(exc):
            # Refused by this service's own policy (keys, limits, quotas): not an upstream error.
            if isinstance(exc, LimitReached):
                self.metrics.rate_limited(exc.limit)
            self.metrics.generations.labels(job.endpoint, job.provider.name, job.model, "refused").inc()
            return
        self.metrics.observe_failure(job.endpoint, job.provider.name, job.model, code)


#: Facts the safeguards leave in a job's metadata that belong on its log line.
_JOB_FACTS = ("retries", "served_by", "fallback_from")


def _job_facts(record: RequestRecord, job: Job) -> None:
    for name in _JOB_FACTS:
        value = job.metadata.get(name)
        if value is not None:
            record.fields[name] = value


def _is_refusal(exc: BaseException) -> bool:
    if isinstance(exc, RateLimited):
        return not (exc.code or "").startswith("upstream_")
    return isinstance(exc, AuthenticationFailed | PermissionDenied)
