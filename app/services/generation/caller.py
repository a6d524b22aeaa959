"""The caller of a job: a key's identity, what it may use, and its limits. The core knows callers
only through this type; the gateway's key store (app/services/gateway/keys.py) makes them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from app.errors import PermissionDenied


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's quotas; `None` means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    max_concurrent: int | None = None
    """Generations of this key in flight at once."""

    @classmethod
    def of(cls, source: object) -> Limits:
        """The limits held in the same-named attributes of `source` (a stored key)."""
        return cls(**{name: getattr(source, name) for name in LIMIT_FIELDS})

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}

    @property
    def any(self) -> bool:
        return any(v is not None for v in self.as_dict().values())

    @property
    def meters(self) -> bool:
        """Whether any per-minute or budget limit applies (what the limiter keeps)."""
        return any(v is not None for k, v in self.as_dict().items() if k != "max_concurrent")

    @property
    def counts_tokens(self) -> bool:
        return any(
            v is not None for v in (self.tokens_per_minute, self.tokens_per_day, self.tokens_per_month)
        )


LIMIT_FIELDS = tuple(f.name for f in fields(Limits))
"""The limits, named alike in `Limits`, the wire models and the `api_keys` table."""


@dataclass(frozen=True, slots=True)
class Client:
    """Who is calling: the key's id (never its secret), what it may use, and its limits."""

    key_id: str
    name: str
    limits: Limits = Limits()
    allowed_models: frozenset[str] | None = None
    """`None`: every model."""
    allowed_presets: frozenset[str] | None = None
    """`None`: every preset."""
    expires_at: datetime | None = None

    def may_use_preset(self, name: str) -> bool:
        return self.allowed_presets is None or name in self.allowed_presets

    def require_preset(self, name: str) -> None:
        """403 unless this key may use the preset (listing, reading or generating with it)."""
        if not self.may_use_preset(name):
            raise PermissionDenied(
                f"This API key may not use the preset '{name}'.", param="preset", code="preset_not_allowed"
            )


#: The caller when `auth_mode=none`: no limits; usage is recorded under this id.
ANONYMOUS = Client(key_id="anonymous", name="anonymous")
