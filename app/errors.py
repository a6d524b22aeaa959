"""The error tree and the one place that maps it to HTTP responses.

    AppError                      500 api_error (never raised on purpose)
    ├── InvalidRequest            400 invalid_request_error  (param names the field)
    │   └── UnsupportedParameter  400 invalid_request_error  code=unsupported_parameter
    ├── AuthenticationFailed      401 authentication_error
    ├── PermissionDenied          403 permission_error
    ├── NotFound                  404 not_found_error
    │   └── ModelNotFound         404 invalid_request_error  code=model_not_found
    ├── Conflict                  409 conflict_error         (Retry-After when it is worth retrying)
    ├── PayloadTooLarge           413 invalid_request_error
    ├── RateLimited               429 rate_limit_error       (Retry-After)
    ├── UpstreamError             502 upstream_error         (never echoes a key; Retry-After when transient)
    ├── ServiceUnavailable        503 service_unavailable    (Retry-After)
    │   └── QueueFull             503 code=queue_full
    ├── UpstreamTimeout           504 timeout_error          (Retry-After)
    ├── NotInstalled              501 not_implemented_error  (an optional part this installation lacks)
    └── ClientDisconnected        499 (nobody is left to read it; logged only)

Every body is OpenAI's `{"error": {"message", "type", "param", "code"}}`. Every 503 and 504, and
every transient 502, carries `Retry-After` (the cause's own hint, else one second): a client of
an outage is always told when to come back; a 502 that will not heal by waiting (the upstream
refusing this service's credentials) is not. An error marked
`transient` (a timeout, a dropped connection, an upstream 429 or 5xx) may succeed if the same
request is sent again; the retry policy (`app/services/gateway/resilience.py`) retries only those.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("genserve.errors")


DEFAULT_RETRY_AFTER = 1.0
"""Seconds in `Retry-After` when an outage's cause gave no better hint."""


class AppError(Exception):
    """Base of every error the service answers with on purpose."""

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    retry_by_default: ClassVar[bool] = False
    """Answer `Retry-After` even when the cause gave no hint (outages that heal by waiting)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        self.transient = transient
        """Sending the same request again may succeed (used by the retry policy)."""

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        retry_after = self.retry_after
        if retry_after is None and (self.retry_by_default or (self.transient and self.status_code >= 500)):
            retry_after = DEFAULT_RETRY_AFTER
        if retry_after is not None:
            headers["retry-after"] = str(max(1, round(retry_after)))
        return headers


class InvalidRequest(AppError):
    status_code = 400
    type = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    default_code = "unsupported_parameter"


class AuthenticationFailed(AppError):
    status_code = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(AppError):
    status_code = 403
    type = "permission_error"


class NotFound(AppError):
    status_code = 404
    type = "not_found_error"


class ModelNotFound(NotFound):
    type = "invalid_request_error"
    default_code = "model_not_found"


class Conflict(AppError):
    """The resource is busy or changed under the request (a conversation answering another message)."""

    status_code = 409
    type = "conflict_error"
    default_code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class RateLimited(AppError):
    status_code = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(AppError):
    status_code = 502
    type = "upstream_error"
    default_code = "upstream_error"


class ServiceUnavailable(AppError):
    status_code = 503
    type = "service_unavailable"
    default_code = "service_unavailable"
    retry_by_default = True


class QueueFull(ServiceUnavailable):
    default_code = "queue_full"


class UpstreamTimeout(AppError):
    status_code = 504
    type = "timeout_error"
    default_code = "upstream_timeout"
    retry_by_default = True


class NotInstalled(AppError):
    """A feature whose optional dependencies this installation does not have (waiting cannot help)."""

    status_code = 501
    type = "not_implemented_error"
    default_code = "not_installed"


class ClientDisconnected(AppError):
    status_code = 499
    type = "client_disconnected"


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


#: pydantic names the member of a union it tried (`str`, `list[TextPart]`) inside `loc`;
#: that is no part of the client's parameter name.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|bytes|dict|list|constrained-\w+)$|\[")
_FORM_FIELD = re.compile(r"^([a-z_]+)\[([a-z_]+)\]$")
"""A multipart field named like `expires_after[seconds]` (OpenAI's form names for nested values)."""


def _param_from_loc(loc: Sequence[Any]) -> str | None:
    """`("body", "messages", 0, "role")` → `messages[0].role`."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    tag_in = 0
    """A tagged union's member is named by its tag right after it (after the index, in a list)."""
    for part in parts:
        if isinstance(part, str) and (form_field := _FORM_FIELD.match(part)):
            part = f"{form_field[1]}.{form_field[2]}"
        if tag_in:
            tag_in -= 1
            if tag_in == 0 and isinstance(part, str):
                continue
        if isinstance(part, str) and "tagged-union[" in part:
            tag_in = 2 if part.startswith(("list[", "dict[")) else 1
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            isinstance(part, str)
            and not part.startswith(("function-", "union[", "tagged-union"))
            and not _UNION_MEMBER.search(part)
        ):
            out += f".{part}" if out else part
    return out or None


def _within(param: str | None, parent: str | None) -> bool:
    if param is None or parent is None:
        return param == parent
    return param == parent or param.startswith((f"{parent}.", f"{parent}["))


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    errors = exc.errors()
    if not errors:
        return InvalidRequest("Invalid request.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest("The request body is not valid JSON.", code="invalid_json", param=None)
    param = _param_from_loc(first.get("loc", ()))
    if first.get("type") == "missing" and param is None:
        return InvalidRequest("A JSON request body is required.", code="missing_body")
    if param is None and first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return InvalidRequest(
            "The request body must be a JSON object, sent with Content-Type: application/json.",
            code="invalid_body",
        )
    if first.get("type") == "extra_forbidden":
        return InvalidRequest(
            f"Unrecognized request argument supplied: {param}", param=param, code="unknown_parameter"
        )
    # When a union (`stop`: string or list) fails, every member reports an error; the deepest
    # one says most (`stop[0]` is empty, rather than "`stop` is not a string"), and between
    # equals, the member whose type matched (a list of 5 is too long, rather than not a string).
    related = [e for e in errors if _within(_param_from_loc(e.get("loc", ())), param)]
    best = max(
        related,
        key=lambda e: (len(e.get("loc", ())), not str(e.get("type", "")).endswith("_type")),
        default=first,
    )
    param = _param_from_loc(best.get("loc", ()))
    message = str(best.get("msg", "Invalid value"))
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if param:
        message = f"Invalid value for '{param}': {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return InvalidRequest(message, param=param, code="invalid_value")


def app_error_response(exc: AppError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.response_headers())


_HTTP_TYPES = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    413: PayloadTooLarge,
    429: RateLimited,
}


def _allowed_methods(request: Request) -> str:
    """Every method of every route at this path: Starlette's 405 names only the first route's
    (a path served by two routes, `GET` and `POST /v1/conversations`, would claim POST only)."""
    methods: set[str] = set()
    path = request.scope["path"]
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if route.methods and regex is not None and regex.match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


def register_error_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to OpenAI's error body."""

    async def on_app_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return app_error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return app_error_response(validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        cls = _HTTP_TYPES.get(exc.status_code)
        headers = exc.headers
        if exc.status_code == 405:
            body = error_body("Method not allowed.", "invalid_request_error", None, "method_not_allowed")
            others = {k: v for k, v in (headers or {}).items() if k.lower() != "allow"}
            headers = {**others, "allow": _allowed_methods(request)}
        elif exc.status_code == 404:
            body = error_body("Not found.", "not_found_error", None, "not_found")
        elif cls is not None:
            body = error_body(str(exc.detail), cls.type, None, cls.default_code)
        else:
            body = error_body(str(exc.detail), "api_error", None, None)
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    async def on_database_error(_: Request, exc: Exception) -> JSONResponse:
        # The engine hides bound values from the message (a prompt never reaches the log).
        log.error("database error", exc_info=exc)
        return app_error_response(
            ServiceUnavailable(
                "The database is not available right now; try again shortly.",
                code="database_unavailable",
                retry_after=1,
            )
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        # Starlette answers from outside every middleware here, so the request id middleware
        # never sees this response: add the id, which matters most when reporting a failure.
        request_id = getattr(request.state, "request_id", None)
        return JSONResponse(
            error_body(
                "The server had an error processing the request.", "api_error", None, "internal_error"
            ),
            status_code=500,
            headers={"x-request-id": request_id} if isinstance(request_id, str) else None,
        )

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(Exception, on_unexpected)
