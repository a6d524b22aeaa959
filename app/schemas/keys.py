"""Wire models of the admin API for client keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.clock import as_utc
from app.schemas.common import JsonNumber

Names = list[str] | None


class KeyLimits(BaseModel):
    """A key's quotas; a missing or null field means unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=10_000_000)
    """Requests per minute (a token bucket: bursts up to this, refilled continuously)."""
    tokens_per_minute: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=10**12)
    """Prompt + completion tokens per minute; requests reserve prompt + max_tokens × n up front."""
    tokens_per_day: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=10**15)
    """Token budget per UTC day."""
    tokens_per_month: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=10**15)
    """Token budget per UTC calendar month."""
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000)
    """Generations in flight at once (across replicas with Redis); one more gets 429."""


def _future(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    # Whether it lies in the future is the key store's to check, by its own clock.
    return as_utc(value)


class KeyCreate(BaseModel):
    """`POST /admin/keys`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    """Who or what the key is for; shown in lists and usage."""
    limits: KeyLimits = Field(default_factory=KeyLimits)
    allowed_models: Names = None
    """Public model names this key may use; null allows every model."""
    allowed_presets: Names = None
    """Presets this key may use; null allows every preset."""
    expires_at: datetime | None = None
    """When the key stops working (ISO 8601 or Unix seconds; UTC when no zone is given)."""

    _check_expiry = field_validator("expires_at")(_future)


class KeyLimitsUpdate(KeyLimits):
    """Only the fields sent change; null removes a limit."""


class KeyUpdate(BaseModel):
    """`PATCH /admin/keys/{id}`: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    limits: KeyLimitsUpdate | None = None
    allowed_models: Names = None
    allowed_presets: Names = None
    expires_at: datetime | None = None

    _check_expiry = field_validator("expires_at")(_future)

    def columns(self) -> dict[str, object]:
        """The `api_keys` columns to set."""
        out: dict[str, object] = {}
        for name in ("name", "allowed_models", "allowed_presets", "expires_at"):
            if name in self.model_fields_set:
                value = getattr(self, name)
                if name == "name" and value is None:
                    continue
                out[name] = sorted(value) if isinstance(value, list) else value
        if self.limits is not None:
            for name in self.limits.model_fields_set:
                out[name] = getattr(self.limits, name)
        return out


class KeyInfo(BaseModel):
    """A key as the admin API shows it: never its secret."""

    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    hint: str
    """The secret's first characters, to tell keys apart."""
    status: Literal["active", "revoked", "expired"]
    created_at: int
    """Unix seconds."""
    expires_at: int | None
    revoked_at: int | None
    limits: KeyLimits
    allowed_models: Names
    allowed_presets: Names


class KeyCreated(KeyInfo):
    """The answer to `POST /admin/keys`: the only time the secret is ever shown."""

    key: str
    """The secret (`gs-...`): store it now, it cannot be shown again."""


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyInfo]
