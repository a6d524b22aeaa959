"""The error body every failure answers with, in OpenAI's shape, as the OpenAPI document shows it."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from app.schemas.common import Schema


class ErrorDetail(Schema):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    message: str
    """What went wrong, for a human."""
    type: str
    """The error's family: `invalid_request_error`, `authentication_error`, `rate_limit_error`, ..."""
    param: str | None
    """The request field at fault, when there is one (`messages[0].content`)."""
    code: str | None
    """A stable machine-readable code (`model_not_found`, `context_length_exceeded`), or null."""


class ErrorResponse(Schema):
    """`{"error": {"message", "type", "param", "code"}}`, as OpenAI's API answers."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    error: ErrorDetail


#: Every operation's error answers in the OpenAPI document (FastAPI's default 422 is never sent:
#: validation errors are 400s in this shape).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorResponse,
        "description": "The request was refused: 400 invalid, 401 no valid key, 403 not allowed, "
        "404 not found, 409 busy, 413 too large, 429 over a limit (with `Retry-After`).",
    },
    "5XX": {
        "model": ErrorResponse,
        "description": "The service or its upstream failed: 502 upstream error, 503 unavailable "
        "(with `Retry-After`), 504 upstream timeout.",
    },
}
