"""Feedback-driven sampling: pick a preset's variant by Thompson sampling over its ratings.

Each variant's quality is a Beta posterior: Beta(1, 1) before any feedback, then every rated
generation that used the variant adds its normalized score r ∈ [0, 1] to alpha and 1 - r to beta.
To choose, draw once from every posterior and take the largest draw: variants that do well are
picked more and more often, while uncertain ones still get tried.

The posteriors are computed from the database (so they survive restarts and are shared by every
replica); each replica reuses what it read for `tuning_refresh_seconds`, and forgets it at once
when feedback arrives through it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from app.clock import Clock
from app.services.apps.presets import Preset
from app.storage import records as record_rows
from app.storage.db import Database

log = logging.getLogger("genserve.tuning")

PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0


@dataclass(frozen=True, slots=True)
class Evidence:
    """The ratings one variant received: how many, and the sum of their scores."""

    ratings: int = 0
    score_sum: float = 0.0

    @property
    def alpha(self) -> float:
        return PRIOR_ALPHA + self.score_sum

    @property
    def beta(self) -> float:
        return PRIOR_BETA + self.ratings - self.score_sum

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


class TuningService:
    """Chooses variants and reports the posteriors."""

    def __init__(
        self,
        db: Database,
        *,
        refresh_seconds: float,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._db = db
        self._clock = clock
        self._refresh = refresh_seconds
        self._rng = rng or random.Random()
        self._cache: dict[str, tuple[float, dict[str, Evidence]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def choose(self, preset: Preset) -> str:
        """A variant of `preset` (which must have some), drawn by Thompson sampling."""
        evidence = await self.evidence(preset.name)
        best, best_draw = "", -1.0
        for name in preset.variants:
            e = evidence.get(name, Evidence())
            draw = self._rng.betavariate(e.alpha, e.beta)
            if draw > best_draw:
                best, best_draw = name, draw
        return best

    def forget(self, preset: str | None) -> None:
        """New feedback arrived for `preset`: read its posteriors again next time."""
        if preset is not None:
            self._cache.pop(preset, None)

    async def evidence(self, preset: str) -> dict[str, Evidence]:
        """Ratings per variant of `preset` (cached for `refresh_seconds`)."""
        cached = self._cache.get(preset)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        lock = self._locks.setdefault(preset, asyncio.Lock())
        async with lock:  # one query per preset at a time, however many requests wait
            cached = self._cache.get(preset)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            try:
                evidence = await self._read(preset)
            except SQLAlchemyError:
                # Tuning must not take generation down with the database: choose from what was
                # read last (or the priors) until the database answers again.
                log.warning("reading the tuning feedback of preset %r failed", preset, exc_info=True)
                evidence = cached[1] if cached is not None else {}
            if self._refresh > 0:
                self._cache[preset] = (self._clock() + self._refresh, evidence)
            return evidence

    async def _read(self, preset: str) -> dict[str, Evidence]:
        async with self._db.session() as session:
            rows = await record_rows.variant_ratings(session, preset)
        return {variant: Evidence(n, total) for variant, (n, total) in rows.items()}

    async def report(self, preset: Preset, *, owner: str | None, recent: int = 100) -> dict[str, object]:
        """Each variant's posterior and how often it was chosen (overall and lately), from
        `owner`'s generations and ratings (`EVERY_OWNER`: everyone's, for the admin)."""
        async with self._db.session() as session:
            rows = await record_rows.variant_ratings(session, preset.name, owner=owner)
            chosen, latest = await record_rows.variant_choices(
                session, preset.name, recent=recent, owner=owner
            )
        evidence = {variant: Evidence(n, total) for variant, (n, total) in rows.items()}
        total = sum(chosen.get(name, 0) for name in preset.variants)
        variants = []
        for name, sampling in preset.variants.items():
            e = evidence.get(name, Evidence())
            variants.append(
                {
                    "name": name,
                    "sampling": sampling,
                    "alpha": round(e.alpha, 4),
                    "beta": round(e.beta, 4),
                    "mean": round(e.mean, 4),
                    "ratings": e.ratings,
                    "chosen": chosen.get(name, 0),
                    "chosen_share": round(chosen.get(name, 0) / total, 4) if total else 0.0,
                    "recent_share": round(latest.count(name) / len(latest), 4) if latest else 0.0,
                }
            )
        return {
            "object": "preset.tuning",
            "preset": preset.name,
            "enabled": bool(preset.variants),
            "tuned_fields": sorted(preset.tuned_fields),
            "prior": {"alpha": PRIOR_ALPHA, "beta": PRIOR_BETA},
            "chosen_total": total,
            "recent_window": len(latest),
            "variants": variants,
        }
