"""Feedback on generations: store one rating per generation, summarize them per preset and variant.

Ratings are thumbs ("up"/"down") or stars (1–5), normalized to a score in [0, 1] so that both
kinds can be averaged and feed the tuning posteriors: up = 1, down = 0, r stars = (r - 1) / 4.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from app.clock import Clocks, as_utc
from app.errors import NotFound
from app.services.apps.records import RecordWriter
from app.services.apps.tuning import TuningService
from app.services.generation.context import RequestContext
from app.storage import records as record_rows
from app.storage.db import Database

Rating = str | int

#: Pauses before an unknown id is declared unknown: a replica stores its records a moment after
#: answering, and the rating may arrive through another replica.
_GRACE = (0.05, 0.1, 0.2, 0.4)

SCALE = "mean_rating is in [0, 1]: up = 1, down = 0, and r stars (1–5) count as (r - 1) / 4"


def normalize(rating: Rating) -> float:
    if rating == "up":
        return 1.0
    if rating == "down":
        return 0.0
    if not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValueError(f"not a rating: {rating!r}")
    return (rating - 1) / 4


class FeedbackService:
    def __init__(
        self, db: Database, records: RecordWriter, tuning: TuningService, *, clocks: Clocks | None = None
    ) -> None:
        self._db = db
        self._clocks = clocks or Clocks()
        self._records = records
        self._tuning = tuning

    async def rate(
        self, ctx: RequestContext, generation_id: str, rating: Rating, comment: str | None
    ) -> dict[str, Any]:
        """Store (or replace) the rating of a generation the caller's key made; `NotFound` for
        an unknown id and for another key's generation alike."""
        owner = ctx.owner
        record = await self._record(generation_id, owner)
        if record is None:
            # It may still be waiting in this replica's queue of records...
            await self._records.flush(within=5.0)
            record = await self._record(generation_id, owner)
        for delay in _GRACE:
            if record is not None:
                break
            # ...or in another replica's, for a few milliseconds more.
            await asyncio.sleep(delay)
            record = await self._record(generation_id, owner)
        if record is None:
            raise NotFound(
                f"No generation with id '{generation_id}'.",
                param="generation_id",
                code="generation_not_found",
            )
        preset, variant = record
        now = self._clocks.now()
        values = {
            "generation_id": generation_id,
            "rating": str(rating),
            "score": normalize(rating),
            "comment": comment,
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.session() as session:
            created_at = as_utc(await record_rows.upsert_rating(session, values))
        self._tuning.forget(preset)
        return {
            "object": "feedback",
            "generation_id": generation_id,
            "rating": rating,
            "score": values["score"],
            "comment": comment,
            "preset": preset,
            "variant": variant,
            "replaced": created_at != now,
            "created_at": int(created_at.timestamp()),
            "updated_at": int(now.timestamp()),
        }

    async def _record(self, generation_id: str, owner: str) -> tuple[str | None, str | None] | None:
        async with self._db.session() as session:
            return await record_rows.preset_and_variant(session, generation_id, owner=owner)

    async def summary(self, owner: str | None) -> dict[str, Any]:
        """Count, mean score and time range of `owner`'s ratings (`EVERY_OWNER`: everyone's, for
        the admin), per preset and per variant."""
        async with self._db.session() as session:
            rows = await record_rows.rating_groups(session, owner=owner)
        groups: dict[str | None, list[dict[str, Any]]] = {}
        for preset, variant, count, total, first, last in rows:
            groups.setdefault(preset, []).append(_stats(count, total, first, last) | {"variant": variant})
        presets = []
        for preset in sorted(groups, key=lambda p: (p is None, p or "")):
            variants = sorted(groups[preset], key=lambda v: (v["variant"] is None, v["variant"] or ""))
            count = sum(v["count"] for v in variants)
            total = sum(v["_sum"] for v in variants)
            first = min(v["_first"] for v in variants)
            last = max(v["_last"] for v in variants)
            presets.append(
                {"preset": preset}
                | _public(_stats(count, total, first, last))
                | {"variants": [{"variant": v["variant"]} | _public(v) for v in variants]}
            )
        return {"object": "feedback.summary", "scale": SCALE, "presets": presets}


def _stats(count: int, total: float, first: datetime, last: datetime) -> dict[str, Any]:
    first, last = as_utc(first), as_utc(last)
    return {
        "count": count,
        "mean_rating": round(total / count, 4) if count else None,
        "first_rated_at": int(first.timestamp()),
        "last_rated_at": int(last.timestamp()),
        "_sum": total,
        "_first": first,
        "_last": last,
    }


def _public(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if not k.startswith("_") and k != "variant"}
