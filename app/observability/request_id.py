"""Request ids: keep a sane incoming `x-request-id`, mint one otherwise (echoed on every response
by `app.api.middleware.context.RequestContextMiddleware`)."""

from __future__ import annotations

import re
import uuid

from starlette.types import Scope

_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
HEADER = b"x-request-id"


def request_id_of(scope: Scope) -> str:
    """The request's incoming id when it is sane (short, plain characters), else a new one."""
    for key, value in scope["headers"]:
        if key == HEADER:
            candidate: str = value.decode("latin-1")
            if _SANE.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex
