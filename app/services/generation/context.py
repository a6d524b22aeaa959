"""What one request carries into the services: who calls, the options its headers set, its id
and its deadline. The API layer builds it; services and job hooks receive it as an argument
(`Job.ctx`), never from an ambient variable, so a signature shows what it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from app.services.generation.caller import ANONYMOUS, Client

CacheStatus = Literal["hit", "miss", "bypass"]

PRIVACY_HEADER = "x-privacy-mode"
"""`off`, `redact` or `block`: this request's privacy mode (it may only make the default stricter)."""


@dataclass(slots=True)
class RequestOptions:
    """Per-request options sent as HTTP headers, and what the service reports back on them."""

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


@dataclass(slots=True)
class RequestContext:
    """One request's caller, options, id and deadline, passed to every service it reaches."""

    caller: Client
    """The authenticated client (`ANONYMOUS` when auth is off)."""
    options: RequestOptions = field(default_factory=RequestOptions)
    request_id: str | None = None
    deadline: float | None = None
    """The monotonic clock's reading by which upstream work must be done (None: the settings' default)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers the services want sent (the caller's rate-limit state)."""

    @classmethod
    def internal(cls, caller: Client = ANONYMOUS) -> RequestContext:
        """A context for work started by the service itself (and for tests): no deadline but
        the settings' default."""
        return cls(caller=caller)

    @property
    def owner(self) -> str:
        """Whose stored data this request may see: its caller's key id."""
        return self.caller.key_id
