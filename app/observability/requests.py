"""Per-request observability: a pure ASGI middleware that times every request (streams to their
last byte), feeds the metrics and writes one access log line; and a `JobHook` that adds what the
generation knows (model, provider, tokens, time to first token) to the same request's record
through `current_request()` (the job hook that does so is app/services/gateway/observe.py).

Other features annotate the current request with `annotate(cache="hit", retries=2, ...)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError
from app.observability.metrics import Metrics

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


def error_code(exc: BaseException) -> str:
    if isinstance(exc, AppError):
        return exc.code or exc.type
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal_error"
