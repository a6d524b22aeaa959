"""Retention (issue 22): settings that refuse bad values, expiry at query time, the sweeper."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from app.main import create_app
from app.services.apps.retention import Retention, Sweeper, build_sweeper
from app.settings import Settings
from app.storage.conversations import ConversationRow, MessageRow
from app.storage.db import Database
from app.storage.responses import ResponseRow
from app.storage.tables import GenerationRecord, UsageDaily
from tests.clock import ManualClock
from tests.conftest import openai_settings, serving


@pytest.mark.parametrize("value", ["-1", "3650000", "thirty", "1.5"])
@pytest.mark.parametrize("variable", ["GENSERVE_RETAIN_RECORDS_DAYS", "GENSERVE_RETAIN_USAGE_DAYS"])
def test_a_bad_retention_refuses_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    assert variable.removeprefix("GENSERVE_").lower() in str(refused.value)


def test_the_defaults_keep_what_the_docs_promise() -> None:
    settings = Settings(_env_file=None)
    assert (settings.retain_records_days, settings.retain_responses_days) == (30, 30)
    assert (settings.retain_conversations_days, settings.retain_usage_days) == (90, 400)
    assert (settings.retain_feedback_days, settings.retain_tuning_days) == (0, 0)


# --- the sweeper, on SQLite and PostgreSQL ---------------------------------------------------

DAY = 86_400.0


async def _database(url: str) -> Database:
    db = Database(url)
    await db.migrate()
    return db


async def _seed(
    db: Database, now: datetime, *, old: int, fresh: int, owner: str = "k1", tag: str = ""
) -> None:
    """`old` rows of every kind from 400+ days ago and `fresh` ones from now."""
    async with db.session() as session:
        for i in range(old + fresh):
            moment = now - timedelta(days=401) if i < old else now
            name = f"{tag}{'old' if i < old else 'new'}{i}"
            session.add(
                GenerationRecord(
                    id=f"rec-{name}",
                    created_at=moment,
                    endpoint="chat",
                    owner=owner,
                    model="m",
                    provider="local",
                    sampling={},
                    prompt_tokens=1,
                    completion_tokens=1,
                    ttft_ms=1.0,
                    total_ms=1.0,
                    meta={},
                )
            )
            session.add(
                ResponseRow(
                    id=f"resp_{name}",
                    owner=owner,
                    created_at=moment,
                    model="m",
                    status="completed",
                    previous_response_id=None,
                    params={},
                    input_items=[],
                    output=[],
                    usage={"input_tokens": 1, "output_tokens": 1},
                    details={},
                )
            )
            session.add(
                ConversationRow(
                    id=f"conv_{name}",
                    created_at=moment,
                    updated_at=moment,
                    model="m",
                    system=None,
                    preset=None,
                    inputs=None,
                    sampling={},
                    meta={},
                    turns=1,
                    owner=owner,
                )
            )
            session.add(
                UsageDaily(key_id=owner, model="m", day=(moment - timedelta(days=i)).date(), requests=1)
            )
        await session.flush()
        for i in range(old + fresh):
            name = f"{tag}{'old' if i < old else 'new'}{i}"
            session.add(
                MessageRow(
                    conversation_id=f"conv_{name}", seq=1, role="user", content="hello", created_at=now
                )
            )
        await session.commit()


async def _count(db: Database, table: type[Any]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def _sweeper(db: Database, clock: ManualClock, holder: str, chunk: int = 4) -> Sweeper:
    settings = Settings(_env_file=None, retention_sweep_chunk=chunk)
    sweeper = build_sweeper(settings, db, clock.clocks, Retention.from_settings(settings, clock.clocks))
    sweeper.holder = holder
    return sweeper


async def test_a_sweep_deletes_what_expired_in_chunks_and_keeps_the_rest(database_url: str) -> None:
    clock = ManualClock()
    db = await _database(database_url)
    try:
        await _seed(db, clock.clocks.now(), old=10, fresh=3)
        report = await _sweeper(db, clock, "a", chunk=4).sweep_once()
        assert report.ran
        assert report.removed["records"] == report.removed["responses"] == 10
        assert report.removed["conversations"] == 10
        assert await _count(db, GenerationRecord) == await _count(db, ResponseRow) == 3
        assert await _count(db, ConversationRow) == await _count(db, MessageRow) == 3
        # Usage rows are kept 400 days: the fresh ones' days (now, now-1d, ...) stay.
        assert await _count(db, UsageDaily) == 3
    finally:
        await db.aclose()


async def test_two_replicas_sweeping_at_once_delete_each_row_once(database_url: str) -> None:
    clock = ManualClock()
    db = await _database(database_url)
    try:
        await _seed(db, clock.clocks.now(), old=20, fresh=2)
        reports = await asyncio.gather(
            _sweeper(db, clock, "a").sweep_once(), _sweeper(db, clock, "b").sweep_once()
        )
        assert sum(r.removed.get("records", 0) for r in reports) == 20
        assert sum(r.removed.get("conversations", 0) for r in reports) == 20
        assert await _count(db, GenerationRecord) == 2
    finally:
        await db.aclose()


async def test_a_sweep_stopped_midway_resumes_on_the_next_run(database_url: str) -> None:
    clock = ManualClock()
    db = await _database(database_url)
    try:
        await _seed(db, clock.clocks.now(), old=10, fresh=1)
        first = _sweeper(db, clock, "a")
        stopped = await first.sweep_once(max_chunks=1)  # as if SIGTERM came after one chunk
        assert stopped.removed["records"] == 4
        assert await _count(db, GenerationRecord) == 7
        # The replica that stopped still holds the lease: another waits until it lapses.
        other = _sweeper(db, clock, "b")
        assert not (await other.sweep_once()).ran
        clock.advance(first.lease_seconds + 1)
        resumed = await other.sweep_once()
        assert resumed.ran
        assert resumed.removed["records"] == 6
        assert await _count(db, GenerationRecord) == 1
        assert await _count(db, ConversationRow) == await _count(db, MessageRow) == 1
    finally:
        await db.aclose()


async def test_an_expired_response_and_conversation_answer_404_before_any_sweep(tmp_path: Path) -> None:
    clock = ManualClock()
    url = f"sqlite+aiosqlite:///{tmp_path}/genserve.db"
    app = create_app(openai_settings(database_url=url, retention_sweep_seconds=86_400), clocks=clock.clocks)
    async with serving(app) as http:
        db = app.state.genserve.db
        await _seed(db, clock.clocks.now() - timedelta(days=1), old=0, fresh=1, owner="anonymous")
        state = app.state.genserve
        assert (await state.responses.get("anonymous", "resp_new0")).id == "resp_new0"
        assert (await http.get("/v1/conversations/conv_new0")).status_code == 200
        clock.advance(30 * DAY)
        gone = await http.get("/v1/responses/resp_new0")
        assert gone.status_code == 404, gone.text
        assert gone.json()["error"]["code"]
        assert (await http.get("/v1/conversations/conv_new0")).status_code == 200  # 90 days
        clock.advance(60 * DAY)
        assert (await http.get("/v1/conversations/conv_new0")).status_code == 404
        # Not yet swept: the rows are still there, but nobody can read them.
        assert await _count(db, ResponseRow) == 1
