"""Client keys: minted once, stored as a SHA-256 digest, looked up fast, refused at once when revoked.

A key is `gs-` followed by 43 URL-safe characters: 256 random bits. That much entropy is what makes
a plain SHA-256 the right digest here: nobody can guess their way back from a stolen digest, and a
deliberately slow hash (bcrypt, argon2), which exists to protect low-entropy passwords, would only
add milliseconds of CPU to every request. The digest is also what the lookup index is built on.

Lookups are cached briefly in each replica. Every change to a key (revoke, update) bumps a version
number — in Redis when configured, so that every replica sees it — and every lookup compares the
version it cached under with the current one, so a revoked key is refused on its very next request.

While the database cannot be reached, a key whose cache entry lapsed still authenticates from it
for `stale_seconds` more (generations keep being answered through a PostgreSQL restart). The
stale entry is not refreshed: the key's first request once the database answers reloads it, so a
revocation made during the outage applies then.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.clock import Clock, as_utc
from app.errors import AuthenticationFailed, InvalidRequest, NotFound, ServiceUnavailable
from app.services.generation.caller import Client, Limits
from app.storage import keys as key_rows
from app.storage.db import Database
from app.storage.tables import ApiKey

log = logging.getLogger("genserve.keys")

KEY_PREFIX = "gs-"
_KEY_SHAPE = re.compile(r"^gs-[A-Za-z0-9_\-]{43}$")
_CACHE_SIZE = 10_000


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _no_key(key_id: str) -> NotFound:
    return NotFound(f"No key with id '{key_id}'.", param="key_id", code="key_not_found")


def key_status(row: ApiKey, at: datetime) -> Literal["active", "revoked", "expired"]:
    """The key's state at the moment `at`."""
    if row.revoked_at is not None:
        return "revoked"
    expires = as_utc(row.expires_at)
    if expires is not None and expires <= at:
        return "expired"
    return "active"


def _check_future(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and as_utc(expires_at) <= now:
        raise InvalidRequest("expires_at must be in the future.", param="expires_at", code="invalid_value")


def _client(row: ApiKey) -> Client:
    return Client(
        key_id=row.id,
        name=row.name,
        limits=Limits.of(row),
        allowed_models=frozenset(row.allowed_models) if row.allowed_models is not None else None,
        allowed_presets=frozenset(row.allowed_presets) if row.allowed_presets is not None else None,
        expires_at=as_utc(row.expires_at),
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    client: Client | None
    """`None`: no such key, or revoked."""
    revoked: bool
    version: int
    loaded: float


class KeyStore:
    """Creates, changes and authenticates client keys."""

    def __init__(
        self,
        db: Database,
        redis: Redis | None,
        prefix: str,
        cache_seconds: float,
        *,
        stale_seconds: float = 0.0,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self._db = db
        self._clock = clock
        self._wall = wall
        self._redis = redis
        self._version_key = f"{prefix}keys:version"
        self._local_version = 0
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_seconds
        self.stale_total = 0
        """Authentications answered from a lapsed cache entry because the database was away."""
        self._cache: dict[str, _Entry] = {}

    # -- authentication ----------------------------------------------------------------------

    def now(self) -> datetime:
        """The wall clock this store reads, as an aware UTC datetime."""
        return datetime.fromtimestamp(self._wall(), UTC)

    async def authenticate(self, secret: str) -> Client:
        """The client a bearer secret belongs to; `AuthenticationFailed` for anything else.
        Messages never repeat the secret."""
        if not _KEY_SHAPE.match(secret):
            raise AuthenticationFailed("The API key is malformed: keys look like `gs-` and 43 characters.")
        hashed = digest(secret)
        # The version is read before the database: a change committed after this read bumps the
        # version after its commit, so the next request reloads.
        version = await self._version()
        entry = self._cache.get(hashed)
        if entry is None or entry.version != version or self._clock() - entry.loaded >= self._cache_seconds:
            entry = await self._reload(hashed, version, entry)
        if entry.client is None:
            if entry.revoked:
                raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
            raise AuthenticationFailed("Incorrect API key provided.")
        expires = entry.client.expires_at
        if expires is not None and expires <= datetime.fromtimestamp(self._wall(), UTC):
            raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
        return entry.client

    async def client_of(self, key_id: str) -> Client | None:
        """The client of a key id as it stands now (work done later on a key's behalf, like a
        batch, runs as this); None when the key is gone, revoked or expired."""
        async with self._db.session() as session:
            row = await key_rows.get(session, key_id)
        if row is None or key_status(row, self.now()) != "active":
            return None
        return _client(row)

    async def _reload(self, hashed: str, version: int, cached: _Entry | None) -> _Entry:
        try:
            return await self._load(hashed, version)
        except ServiceUnavailable:
            # Only a key that was valid, within its bound; never a cached refusal turned valid.
            if (
                cached is None
                or cached.client is None
                or self._clock() - cached.loaded >= self._cache_seconds + self._stale_seconds
            ):
                raise
            self.stale_total += 1
            return cached

    async def _load(self, hashed: str, version: int) -> _Entry:
        async with self._db.session() as session:
            row = await key_rows.by_digest(session, hashed)
        if row is None or row.revoked_at is not None:
            entry = _Entry(None, row is not None, version, self._clock())
        else:
            entry = _Entry(_client(row), False, version, self._clock())
        if self._cache_seconds > 0:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[hashed] = entry
        return entry

    async def _version(self) -> int:
        if self._redis is None:
            return self._local_version
        try:
            raw = await self._redis.get(self._version_key)
        except RedisError as exc:  # without the version a revoked key could pass: fail closed
            log.error("key version unavailable", exc_info=exc)
            raise ServiceUnavailable("API keys cannot be checked right now.", retry_after=1) from exc
        return int(raw) if raw is not None else 0

    async def _changed(self) -> None:
        """Called after every committed change: all replicas drop what they cached."""
        self._local_version += 1
        self._cache.clear()
        if self._redis is not None:
            await self._redis.incr(self._version_key)

    # -- administration ----------------------------------------------------------------------

    async def create(
        self,
        *,
        name: str,
        limits: Limits,
        allowed_models: Iterable[str] | None,
        allowed_presets: Iterable[str] | None,
        expires_at: datetime | None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is not kept anywhere and cannot be shown again."""
        _check_future(expires_at, self.now())
        secret = new_secret()
        row = ApiKey(
            id=f"key_{uuid.uuid4().hex[:24]}",
            name=name,
            secret_hash=digest(secret),
            hint=secret[:7],
            created_at=self.now(),
            expires_at=expires_at,
            revoked_at=None,
            allowed_models=sorted(allowed_models) if allowed_models is not None else None,
            allowed_presets=sorted(allowed_presets) if allowed_presets is not None else None,
            **limits.as_dict(),
        )
        async with self._db.session() as session:
            await key_rows.add(session, row)
        # A cached "no such key" for this digest is practically impossible, but cheap to rule out.
        await self._changed()
        log.info("key created", extra={"key_id": row.id, "key_name": name})
        return row, secret

    async def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        async with self._db.session() as session:
            return await key_rows.all_keys(session, include_revoked=include_revoked)

    async def get(self, key_id: str) -> ApiKey:
        async with self._db.session() as session:
            row = await key_rows.get(session, key_id)
        if row is None:
            raise _no_key(key_id)
        return row

    async def update(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        """Set the given columns (name, limits, allowed models/presets, expiry)."""
        _check_future(changes.get("expires_at"), self.now())
        async with self._db.session() as session:
            row = await key_rows.update(session, key_id, changes)
        if row is None:
            raise _no_key(key_id)
        await self._changed()
        log.info("key updated", extra={"key_id": key_id, "fields": sorted(changes)})
        return row

    async def revoke(self, key_id: str) -> ApiKey:
        async with self._db.session() as session:
            row = await key_rows.revoke(session, key_id, self.now())
        if row is None:
            raise _no_key(key_id)
        await self._changed()
        log.info("key revoked", extra={"key_id": key_id})
        return row
