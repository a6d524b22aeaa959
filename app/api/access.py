"""Bearer keys on the way in, rate-limit headers on the way out.

`AccessMiddleware` gives every request a `RequestAccess` (in a context variable) and adds the
`x-ratelimit-*` headers the generation hook leaves there to the response — JSON, streams and
errors alike. `authenticate_client` is an app-wide dependency that, for every `/v1/...` route
(including routers added later), turns `Authorization: Bearer <key>` into the caller's identity.
`require_admin` guards `/admin/*` with the admin token.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AuthenticationFailed, PermissionDenied
from app.observability.requests import annotate
from app.services.access import RequestAccess, current_access
from app.services.auth import ANONYMOUS
from app.state import AppState

CLIENT_PREFIX = "/v1/"
_CHALLENGE = {"www-authenticate": "Bearer"}


class AccessMiddleware:
    """Pure ASGI, so the per-request context is visible to the route and its stream."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestAccess()
        token = current_access.set(ctx)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and ctx.headers:
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in ctx.headers.items():
                    raw = name.encode("latin-1")
                    if raw not in present:
                        headers.append((raw, value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            current_access.reset(token)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationFailed(
            "No API key provided: send it as `Authorization: Bearer <key>`.",
            code="missing_api_key",
            headers=_CHALLENGE,
        )
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise AuthenticationFailed(
            "Malformed Authorization header: expected `Bearer <key>`.", headers=_CHALLENGE
        )
    return credentials


async def authenticate_client(request: Request) -> None:
    """Who is calling a `/v1/...` route: a key's client, or `anonymous` with auth_mode=none."""
    if not request.scope["path"].startswith(CLIENT_PREFIX):
        return
    state: AppState = request.app.state.genserve
    ctx = current_access.get()
    if ctx is None:  # an app assembled without the middleware
        ctx = RequestAccess()
        current_access.set(ctx)
    if state.settings.auth_mode == "none" or state.access is None:
        ctx.client = ANONYMOUS
        return
    try:
        ctx.client = await state.access.keys.authenticate(_bearer(request))
    except AuthenticationFailed as exc:
        exc.headers.update(_CHALLENGE)
        raise
    annotate(key_id=ctx.client.key_id)  # the access log line says whose request it was


async def require_admin(request: Request) -> None:
    """`/admin/*`: the admin token, compared in constant time."""
    settings = request.app.state.genserve.settings
    if settings.admin_token is None:
        raise PermissionDenied(
            "The admin API is disabled: set GENSERVE_ADMIN_TOKEN to enable it.", code="admin_disabled"
        )
    given = _bearer(request)
    expected = settings.admin_token.get_secret_value()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise AuthenticationFailed("Incorrect admin token.", code="invalid_admin_token", headers=_CHALLENGE)
