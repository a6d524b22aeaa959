"""Rate limits and quotas per key: requests/minute, tokens/minute, tokens per UTC day and month.

Per-minute limits are buckets that drain continuously, as OpenAI's do: an idle key may spend its
whole minute's allowance at once, and what it spent drains at limit/60 per second;
`x-ratelimit-reset-*` is the time until it has fully drained. A changed limit applies at once.
Day and month budgets are counters per calendar day and month (UTC).

A request reserves its worst case up front (prompt estimate + max_tokens × n) and settles with
its real usage when it ends, so concurrent requests cannot overrun a limit between check and
bill. With Redis, both steps are one Lua script each: atomic, on Redis's clock, exact across any
number of replicas. Without Redis the same arithmetic runs in-process (one replica only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from redis.asyncio import Redis

from app.clock import Clock
from app.errors import RateLimited
from app.services.generation.caller import Limits

RATE_LIMIT_HEADERS = (
    *(f"x-ratelimit-{w}-{kind}" for kind in ("requests", "tokens") for w in ("limit", "remaining", "reset")),
    "retry-after-ms",
)

# Budget counters outlive their day or month by this much, so a request that straddles midnight
# still settles against the counter it reserved from.
_BUDGET_GRACE = 2 * 86400


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one request took from its key's limits, to be settled when it ends."""

    key_id: str
    limits: Limits
    tokens: int
    day: str
    month: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A key's per-minute buckets right after a decision, for the response headers."""

    limits: Limits
    requests_used: float = 0.0
    """Requests still counted in the bucket (it drains at limit/60 per second)."""
    tokens_used: float = 0.0

    def headers(self) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers, for the limits this key has."""
        out: dict[str, str] = {}
        for kind, limit, used in (
            ("requests", self.limits.requests_per_minute, self.requests_used),
            ("tokens", self.limits.tokens_per_minute, self.tokens_used),
        ):
            if limit is None:
                continue
            out[f"x-ratelimit-limit-{kind}"] = str(limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(limit - used)))
            out[f"x-ratelimit-reset-{kind}"] = duration(max(0.0, used) * 60 / limit)
        return out


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `6s`, `1.5s`, `1m0s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    secs = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs}s" if minutes else f"{secs}s"


def periods(at: datetime) -> tuple[str, str, float, float]:
    """Day and month labels (UTC), and the seconds until each ends."""
    day_start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    next_day = day_start + timedelta(days=1)
    if at.month == 12:
        next_month = day_start.replace(year=at.year + 1, month=1, day=1)
    else:
        next_month = day_start.replace(month=at.month + 1, day=1)
    return (
        at.strftime("%Y%m%d"),
        at.strftime("%Y%m"),
        (next_day - at).total_seconds(),
        (next_month - at).total_seconds(),
    )


# Decisions, shared by both implementations (and the Lua script's return codes).
ADMITTED, NO_REQUESTS, NO_TOKENS, TOO_LARGE, NO_DAY_BUDGET, NO_MONTH_BUDGET = range(6)


_LIMIT_NAMES = {
    NO_REQUESTS: "requests_per_minute",
    NO_TOKENS: "tokens_per_minute",
    TOO_LARGE: "tokens_per_minute",
    NO_DAY_BUDGET: "tokens_per_day",
    NO_MONTH_BUDGET: "tokens_per_month",
}


class LimitReached(RateLimited):
    """A key's own limit or budget refused the request (unlike an upstream's 429)."""

    def __init__(self, message: str, *, limit: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.limit = limit
        """Which: `requests_per_minute`, `tokens_per_minute`, `tokens_per_day` or `tokens_per_month`."""


def refusal(
    status: int,
    wait: float,
    limits: Limits,
    tokens: int,
    snapshot: Snapshot,
    day_left: float,
    month_left: float,
) -> LimitReached:
    """The 429 for a refused reservation, with its headers and Retry-After."""
    headers = snapshot.headers()
    limit = _LIMIT_NAMES[status]
    if status == TOO_LARGE:
        # Waiting cannot help, so no Retry-After: the client must ask for fewer tokens.
        return LimitReached(
            f"Request too large: it reserves {tokens} tokens (prompt + max_tokens × n), more than "
            f"this key's {limits.tokens_per_minute} tokens per minute. Lower max_tokens.",
            limit=limit,
            code="request_too_large",
            headers=headers,
        )
    code: str | None = None
    if status == NO_REQUESTS:
        message = f"Rate limit reached: {limits.requests_per_minute} requests per minute."
    elif status == NO_TOKENS:
        message = (
            f"Rate limit reached: {limits.tokens_per_minute} tokens per minute; this request "
            f"reserves {tokens} (prompt + max_tokens × n)."
        )
    elif status == NO_DAY_BUDGET:
        message = (
            f"Daily token budget exhausted: {limits.tokens_per_day} tokens per day (UTC); this "
            f"request reserves {tokens}."
        )
        wait, code = day_left, "insufficient_quota"
    else:
        message = (
            f"Monthly token budget exhausted: {limits.tokens_per_month} tokens per month (UTC); this "
            f"request reserves {tokens}."
        )
        wait, code = month_left, "insufficient_quota"
    wait = max(wait, 0.001)
    return LimitReached(
        message,
        limit=limit,
        code=code,
        retry_after=math.ceil(wait),
        headers={**headers, "retry-after-ms": str(math.ceil(wait * 1000))},
    )


class Limiter(Protocol):
    """Takes a request's reservation from a key's limits, and settles it afterwards."""

    async def reserve(self, key_id: str, limits: Limits, tokens: int) -> tuple[Reservation, Snapshot]:
        """Admit one request reserving `tokens`, or raise `RateLimited` (headers included)."""
        ...

    async def settle(self, reservation: Reservation, used: int) -> None:
        """Replace the reserved tokens with the `used` ones (0 releases them all)."""
        ...


class MemoryLimiter:
    """The limits of a single instance, kept in this process."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        """Wall-clock seconds: windows are per minute, per UTC day and month."""
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._spent: dict[tuple[str, str], int] = {}
        self._period = ""

    def _used(self, key: tuple[str, str], limit: int, at: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return 0.0
        used, ts = state
        return max(0.0, used - (at - ts) * limit / 60)

    async def reserve(self, key_id: str, limits: Limits, tokens: int) -> tuple[Reservation, Snapshot]:
        at = self._clock()
        day, month, day_left, month_left = periods(datetime.fromtimestamp(at, UTC))
        if day != self._period:  # forget finished periods
            self._period = day
            self._spent = {k: v for k, v in self._spent.items() if k[1] in (f"d{day}", f"m{month}")}
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        req = self._used((key_id, "req"), rpm, at) if rpm else 0.0
        tok = self._used((key_id, "tok"), tpm, at) if tpm else 0.0
        day_spent = self._spent.get((key_id, f"d{day}"), 0)
        month_spent = self._spent.get((key_id, f"m{month}"), 0)
        status, wait = ADMITTED, 0.0
        if rpm and req + 1 > rpm:
            status, wait = NO_REQUESTS, (req + 1 - rpm) * 60 / rpm
        elif tpm and tokens > tpm:
            status = TOO_LARGE
        elif tpm and tok + tokens > tpm:
            status, wait = NO_TOKENS, (tok + tokens - tpm) * 60 / tpm
        elif limits.tokens_per_day is not None and day_spent + tokens > limits.tokens_per_day:
            status = NO_DAY_BUDGET
        elif limits.tokens_per_month is not None and month_spent + tokens > limits.tokens_per_month:
            status = NO_MONTH_BUDGET
        if status != ADMITTED:
            raise refusal(status, wait, limits, tokens, Snapshot(limits, req, tok), day_left, month_left)
        if rpm:
            req += 1
            self._buckets[(key_id, "req")] = (req, at)
        if tpm:
            tok += tokens
            self._buckets[(key_id, "tok")] = (tok, at)
        self._spent[(key_id, f"d{day}")] = day_spent + tokens
        self._spent[(key_id, f"m{month}")] = month_spent + tokens
        return Reservation(key_id, limits, tokens, day, month), Snapshot(limits, req, tok)

    async def settle(self, reservation: Reservation, used: int) -> None:
        delta = used - reservation.tokens
        if delta == 0:
            return
        key_id, tpm = reservation.key_id, reservation.limits.tokens_per_minute
        if tpm:
            at = self._clock()
            level = self._used((key_id, "tok"), tpm, at)
            self._buckets[(key_id, "tok")] = (max(0.0, level + delta), at)
        for label in (f"d{reservation.day}", f"m{reservation.month}"):
            if (key_id, label) in self._spent:
                self._spent[(key_id, label)] += delta


# A bucket is a hash {used, ts}: what it still holds, draining at limit/60 per second (so a
# changed limit applies at once). A missing bucket is empty. Times come from Redis's own clock, so
# replicas whose clocks disagree still share one truth.
_BUCKET_LUA = """
local function used(key, limit, now)
  local v = redis.call('HMGET', key, 'used', 'ts')
  local u, ts = tonumber(v[1]), tonumber(v[2])
  if u == nil then return 0 end
  u = u - (now - ts) * limit / 60
  if u < 0 then u = 0 end
  return u
end
local function store(key, u, limit, now)
  if u <= 0 then redis.call('DEL', key) return end
  redis.call('HSET', key, 'used', tostring(u), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(u * 60000 / limit) + 1000)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: requests bucket, tokens bucket, day counter, month counter
# ARGV: rpm, tpm, day budget, month budget (0 = unlimited), tokens, day ttl, month ttl
_RESERVE_LUA = (
    _BUCKET_LUA
    + """
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local dayb, monthb, tokens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local req, tok = 0, 0
if rpm > 0 then req = used(KEYS[1], rpm, now) end
if tpm > 0 then tok = used(KEYS[2], tpm, now) end
local dayu = tonumber(redis.call('GET', KEYS[3]) or '0')
local monthu = tonumber(redis.call('GET', KEYS[4]) or '0')
local status, wait = 0, 0
if rpm > 0 and req + 1 > rpm then status, wait = 1, (req + 1 - rpm) * 60 / rpm
elseif tpm > 0 and tokens > tpm then status = 3
elseif tpm > 0 and tok + tokens > tpm then status, wait = 2, (tok + tokens - tpm) * 60 / tpm
elseif dayb > 0 and dayu + tokens > dayb then status = 4
elseif monthb > 0 and monthu + tokens > monthb then status = 5
end
if status == 0 then
  if rpm > 0 then req = req + 1; store(KEYS[1], req, rpm, now) end
  if tpm > 0 then tok = tok + tokens; store(KEYS[2], tok, tpm, now) end
  if dayb > 0 then redis.call('INCRBY', KEYS[3], tokens); redis.call('EXPIRE', KEYS[3], ARGV[6]) end
  if monthb > 0 then redis.call('INCRBY', KEYS[4], tokens); redis.call('EXPIRE', KEYS[4], ARGV[7]) end
end
return {status, tostring(wait), tostring(req), tostring(tok)}
"""
)

# KEYS: tokens bucket, day counter, month counter
# ARGV: tpm (0 = none), delta = used - reserved
_SETTLE_LUA = (
    _BUCKET_LUA
    + """
local tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 then store(KEYS[1], used(KEYS[1], tpm, now) + delta, tpm, now) end
for i = 2, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], delta) end
end
return 1
"""
)


class RedisLimiter:
    """Limits shared by every replica through Redis."""

    def __init__(self, redis: Redis, prefix: str, clock: Clock = time.time) -> None:
        self._redis = redis
        self._clock = clock
        """Wall-clock seconds: which UTC day and month a budget counts in."""
        self._prefix = f"{prefix}limits:"
        self._reserve = redis.register_script(_RESERVE_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)

    def _keys(self, key_id: str, day: str, month: str) -> list[str]:
        p = f"{self._prefix}{key_id}:"
        return [f"{p}req", f"{p}tok", f"{p}d{day}", f"{p}m{month}"]

    async def reserve(self, key_id: str, limits: Limits, tokens: int) -> tuple[Reservation, Snapshot]:
        day, month, day_left, month_left = periods(datetime.fromtimestamp(self._clock(), UTC))
        status, wait, req, tok = await self._reserve(
            keys=self._keys(key_id, day, month),
            args=[
                limits.requests_per_minute or 0,
                limits.tokens_per_minute or 0,
                limits.tokens_per_day or 0,
                limits.tokens_per_month or 0,
                tokens,
                math.ceil(day_left) + _BUDGET_GRACE,
                math.ceil(month_left) + _BUDGET_GRACE,
            ],
        )
        snap = Snapshot(limits, float(req), float(tok))
        if int(status) != ADMITTED:
            raise refusal(int(status), float(wait), limits, tokens, snap, day_left, month_left)
        return Reservation(key_id, limits, tokens, day, month), snap

    async def settle(self, reservation: Reservation, used: int) -> None:
        delta = used - reservation.tokens
        if delta == 0:
            return
        _, tok, day, month = self._keys(reservation.key_id, reservation.day, reservation.month)
        await self._settle(
            keys=[tok, day, month],
            args=[reservation.limits.tokens_per_minute or 0, delta],
        )


class Concurrency(Protocol):
    """Generations in flight per key (`max_concurrent`)."""

    async def acquire(self, key_id: str, limit: int) -> bool:
        """Take a slot; False when `limit` are already taken."""
        ...

    async def release(self, key_id: str) -> None:
        """Give a slot back."""
        ...


class MemoryConcurrency:
    """Slots counted in this process (a single instance)."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    async def acquire(self, key_id: str, limit: int) -> bool:
        taken = self._in_flight.get(key_id, 0)
        if taken >= limit:
            return False
        self._in_flight[key_id] = taken + 1
        return True

    async def release(self, key_id: str) -> None:
        taken = self._in_flight.get(key_id, 0) - 1
        if taken > 0:
            self._in_flight[key_id] = taken
        else:
            self._in_flight.pop(key_id, None)


_ACQUIRE_LUA = """
local taken = redis.call('INCR', KEYS[1])
if taken > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE_LUA = """
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisConcurrency:
    """Slots shared by every replica. The count expires `lease` seconds after the last
    acquisition, so slots a crashed replica never gave back do not stay taken forever."""

    def __init__(self, redis: Redis, prefix: str, lease: float) -> None:
        self._prefix = f"{prefix}inflight:"
        self._lease = max(1, math.ceil(lease))
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._release = redis.register_script(_RELEASE_LUA)

    async def acquire(self, key_id: str, limit: int) -> bool:
        return bool(await self._acquire(keys=[self._prefix + key_id], args=[limit, self._lease]))

    async def release(self, key_id: str) -> None:
        await self._release(keys=[self._prefix + key_id])
