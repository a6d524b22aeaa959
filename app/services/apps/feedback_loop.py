"""The feedback loop's parts, opened by the lifespan: presets, generation records, feedback, tuning.

Presets pick sampling (tuned by feedback), every generation leaves a record, ratings of records
update the tuning. A broken preset file stops the start-up here, naming the preset and field.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.clock import Clocks
from app.services.apps.feedback import FeedbackService
from app.services.apps.records import RecordHook, RecordWriter
from app.services.apps.retention import EndUsers
from app.services.apps.tuning import TuningService
from app.settings import Settings
from app.storage.db import Database
from app.storage.spool import Spool


@dataclass(frozen=True, slots=True)
class FeedbackLoop:
    records: RecordWriter
    record_hook: RecordHook
    """Goes last among the job hooks, so that it sees what every other hook added to a job."""
    tuning: TuningService
    feedback: FeedbackService


@contextlib.asynccontextmanager
async def open_feedback_loop(
    settings: Settings,
    db: Database,
    clocks: Clocks | None = None,
    *,
    end_users: EndUsers | None = None,
    spool: Spool | None = None,
) -> AsyncIterator[FeedbackLoop]:
    """Start the record writer; at exit, drain it (before the database closes)."""
    records = RecordWriter(
        db, linger=settings.records_flush_seconds, max_pending=settings.records_max_pending, spool=spool
    )
    records.start()
    clocks = clocks or Clocks()
    tuning = TuningService(db, refresh_seconds=settings.tuning_refresh_seconds, clock=clocks.monotonic)
    try:
        yield FeedbackLoop(
            records=records,
            record_hook=RecordHook(
                records, store_text=settings.store_text, clocks=clocks, end_users=end_users
            ),
            tuning=tuning,
            feedback=FeedbackService(db, records, tuning, clocks=clocks),
        )
    finally:
        await records.aclose()
