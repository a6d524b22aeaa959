"""Bearer keys on the way in.

`authenticate_client` is an app-wide dependency that turns `Authorization: Bearer <key>` into
the caller's identity, kept in the request's state for `get_context` (app/api/deps.py). It
decides on the route the request matched (its template, which a `root_path` or a parent app's
mount point does not change; a route that meters its own jobs says so with `@metered_per_job`),
and denies by default: every route needs a client key except the
few named in `OPEN_ROUTES` and those guarded by a token of their own (`require_admin` for
`/admin/*`, `require_metrics_token` for `/metrics`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request

from app.errors import AuthenticationFailed, PermissionDenied
from app.observability.requests import annotate
from app.services.generation.caller import ANONYMOUS
from app.state import AppState

OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/", "/playground/{asset}"})
"""Route templates anyone may call: probes and the playground's page and assets."""
OWN_TOKEN_ROUTES = ("/admin/", "/metrics")
"""Route templates (prefixes) that check a token of their own instead of a client key."""
_PER_JOB = "__genserve_metered_per_job__"

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def metered_per_job(endpoint: Endpoint) -> Endpoint:
    """Declares a route whose jobs the access hook meters (a request and its tokens, per job):
    the door does not count it again. Every other authenticated route counts one request here.
    Put it under `@router.post(...)`, on the endpoint function."""
    setattr(endpoint, _PER_JOB, True)
    return endpoint


def _meters_per_job(request: Request) -> bool:
    route = request.scope.get("route")
    return bool(getattr(getattr(route, "endpoint", None), _PER_JOB, False))


_CHALLENGE = {"www-authenticate": "Bearer"}


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


def route_template(request: Request) -> str | None:
    """The path template of the route this request matched (None before routing)."""
    path = getattr(request.scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


async def authenticate_client(request: Request) -> None:
    """Who is calling: a key's client, or `anonymous` with auth_mode=none."""
    template = route_template(request)
    if template in OPEN_ROUTES or (template is not None and template.startswith(OWN_TOKEN_ROUTES)):
        return
    state: AppState = request.app.state.genserve
    if state.settings.auth_mode == "none":
        request.state.caller = ANONYMOUS
        return
    address = request.client.host if request.client is not None else "unknown"
    await state.access.check_address(address)
    try:
        client = await state.access.keys.authenticate(_bearer(request))
    except AuthenticationFailed as exc:
        exc.headers.update(_CHALLENGE)
        await state.access.count_failure(address)
        raise
    request.state.caller = client
    annotate(key_id=client.key_id)  # the access log line says whose request it was
    if not _meters_per_job(request):
        await state.access.count_request(client)


async def require_metrics_token(request: Request) -> None:
    """`/metrics`: the metrics token when one is set (`GENSERVE_METRICS_TOKEN`)."""
    settings = request.app.state.genserve.settings
    if settings.metrics_token is None:
        return
    given = _bearer(request)
    expected = settings.metrics_token.get_secret_value()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise AuthenticationFailed(
            "Incorrect metrics token.", code="invalid_metrics_token", headers=_CHALLENGE
        )


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
