"""The feedback loop's parts, opened by the lifespan: presets, generation records, feedback, tuning.

Presets pick sampling (tuned by feedback), every generation leaves a record, ratings of records
update the tuning. A broken preset file stops the start-up here, naming the preset and field.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from app.presets import load_presets
from app.services.feedback import FeedbackService
from app.services.presets import PresetService
from app.services.records import RecordHook, RecordWriter
from app.services.tuning import TuningService

if TYPE_CHECKING:
    from app.state import AppState


async def open_feedback_loop(state: AppState, stack: AsyncExitStack) -> None:
    """Set up `state.presets`, `state.records` and `state.feedback`; the record hook goes last,
    so that it sees what every other hook added to a job."""
    settings = state.settings
    presets = load_presets(settings.presets_file)
    records = RecordWriter(state.db, max_pending=settings.records_max_pending)
    records.start()
    state.metrics.watch_records(records)
    # Registered after the database's own close, so it runs before it: records are drained first.
    stack.push_async_callback(records.aclose)
    state.generation.hooks.append(RecordHook(records, store_text=settings.store_text))
    tuning = TuningService(state.db, refresh_seconds=settings.tuning_refresh_seconds)
    state.records = records
    state.presets = PresetService(
        presets, state.generation, tuning, map_concurrency=settings.summarize_concurrency
    )
    state.feedback = FeedbackService(state.db, records, tuning)
