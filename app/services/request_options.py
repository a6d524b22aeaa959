"""Per-request options sent as HTTP headers (privacy mode, cache opt-out), and what the service
reports back (cache hit or miss), carried in a context variable so every endpoint honours them.

The HTTP side is `app/api/request_options.py`; jobs run outside a request see the defaults.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

CacheStatus = Literal["hit", "miss", "bypass"]

PRIVACY_HEADER = "x-privacy-mode"
"""`off`, `redact` or `block`: this request's privacy mode (it may only make the default stricter)."""


@dataclass(slots=True)
class RequestOptions:
    privacy: str | None = None
    """The raw `x-privacy-mode` header, validated where it is used (so that a bad value is a 400)."""
    cache_read: bool = True
    """False with `Cache-Control: no-cache` (or `no-store`): do not answer from the cache."""
    cache_write: bool = True
    """False with `Cache-Control: no-store`: do not keep this answer either."""
    cache_status: CacheStatus | None = None
    """What the cache did for this request; sent back as `x-cache`."""

    @classmethod
    def from_headers(cls, privacy: str | None, cache_control: str | None) -> RequestOptions:
        directives = {d.strip().lower() for d in (cache_control or "").split(",")}
        no_store = "no-store" in directives
        return cls(
            privacy=privacy,
            cache_read=not (no_store or "no-cache" in directives),
            cache_write=not no_store,
        )

    def record_cache(self, status: CacheStatus) -> None:
        """A request that runs several jobs is a hit only when every job was."""
        if self.cache_status is None or self.cache_status == "hit":
            self.cache_status = status


_current: ContextVar[RequestOptions | None] = ContextVar("genserve_request_options", default=None)


def current() -> RequestOptions:
    """The options of the request being served (defaults outside a request)."""
    options = _current.get()
    return options if options is not None else RequestOptions()


def activate(options: RequestOptions) -> object:
    """Make `options` current; returns a token for `deactivate`."""
    return _current.set(options)


def deactivate(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
