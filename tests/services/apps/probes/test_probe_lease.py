"""A probe's lease: a probe whose replica stopped renewing it reads as failed (interrupted) and
its owner may start another; a probe whose replica is alive is never failed, however long it runs.
Both engines; two apps on one database stand for two replicas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx
from alembic import command
from sqlalchemy import text

from app.storage import probes as repo
from app.storage.db import Database, alembic_config
from tests.access_helpers import bearer, create_key, keys_app, running
from tests.api.test_probes_api import probe_body, warmer_for_women
from tests.clock import ManualClock
from tests.conftest import openai_settings
from tests.waiting import eventually


def wall(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock.clocks.wall(), UTC)


async def test_a_probe_whose_replica_died_reads_failed_and_its_owner_can_start_another(
    database_url: str, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(side_effect=warmer_for_women)
    clock = ManualClock()
    app = keys_app(database_url=database_url, clocks=clock.clocks, probe_max_active=1, probe_lease_seconds=60)
    async with running(app) as client:
        key_id, key = await create_key(client)
        # What a killed replica leaves behind: a running row nobody renews any more.
        async with app.state.genserve.db.session() as session, session.begin():
            row = repo.ProbeRow(
                id="probe-orphan", owner=key_id, kind="bias", status="running", done=3, total=16, request={}
            )
            await repo.insert_probe(session, row, now=wall(clock))
        clock.advance(30)  # within the lease it still counts as running
        assert (await client.get("/v1/probes/probe-orphan", headers=bearer(key))).json()[
            "status"
        ] == "running"
        refused = await client.post("/v1/probes/bias", json=probe_body(), headers=bearer(key))
        assert refused.status_code == 429

        clock.advance(31)
        probe = (await client.get("/v1/probes/probe-orphan", headers=bearer(key))).json()
        assert probe["status"] == "failed"
        assert probe["error"] == repo.INTERRUPTED
        assert probe["finished_at"] is not None
        listed = (await client.get("/v1/probes", headers=bearer(key))).json()["data"]
        assert [p["status"] for p in listed if p["id"] == "probe-orphan"] == ["failed"]

        r = await client.post("/v1/probes/bias", json=probe_body(), headers=bearer(key))
        assert r.status_code == 200, r.text
        await app.state.genserve.probes.wait(r.json()["id"])
        done = (await client.get(f"/v1/probes/{r.json()['id']}", headers=bearer(key))).json()
        assert done["status"] == "succeeded", done["error"]


async def test_the_owner_starting_a_probe_frees_the_slot_of_an_abandoned_one(
    database_url: str, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(side_effect=warmer_for_women)
    clock = ManualClock()
    app = keys_app(database_url=database_url, clocks=clock.clocks, probe_max_active=1)
    async with running(app) as client:
        key_id, key = await create_key(client)
        async with app.state.genserve.db.session() as session, session.begin():
            row = repo.ProbeRow(
                id="probe-orphan", owner=key_id, kind="bias", status="queued", done=0, total=16, request={}
            )
            await repo.insert_probe(session, row, now=wall(clock) - timedelta(hours=1))
        r = await client.post("/v1/probes/bias", json=probe_body(), headers=bearer(key))
        assert r.status_code == 200, r.text
        await app.state.genserve.probes.wait(r.json()["id"])


async def test_a_live_probe_on_another_replica_is_never_failed(
    database_url: str, upstream: respx.MockRouter
) -> None:
    release = asyncio.Event()
    waiting = asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        waiting.set()
        await release.wait()
        return warmer_for_women(request)

    upstream.post("/chat/completions").mock(side_effect=held)
    clock = ManualClock()
    lease = {"probe_lease_seconds": 60, "probe_heartbeat_seconds": 0.02, "probe_concurrency": 1}
    a = keys_app(database_url=database_url, clocks=clock.clocks, **lease)
    b = keys_app(database_url=database_url, clocks=clock.clocks, **lease)
    async with running(a) as on_a, running(b) as on_b:
        _, key = await create_key(on_a)
        r = await on_a.post("/v1/probes/bias", json=probe_body(samples=2), headers=bearer(key))
        probe_id = r.json()["id"]
        await waiting.wait()

        for _ in range(3):  # three leases pass; replica A renews after each
            clock.advance(90)
            now = wall(clock)

            async def renewed(moment: datetime = now) -> bool:
                async with a.state.genserve.db.session() as session:
                    query = text("SELECT heartbeat_at FROM probes WHERE id = :id")
                    beat = (await session.execute(query, {"id": probe_id})).scalar_one()
                if isinstance(beat, str):  # SQLite through a textual query
                    beat = datetime.fromisoformat(beat)
                return bool(beat.replace(tzinfo=UTC) >= moment)

            await eventually(renewed)
            probe = (await on_b.get(f"/v1/probes/{probe_id}", headers=bearer(key))).json()
            assert probe["status"] == "running"

        release.set()
        await a.state.genserve.probes.wait(probe_id)
        probe = (await on_b.get(f"/v1/probes/{probe_id}", headers=bearer(key))).json()
        assert probe["status"] == "succeeded", probe["error"]


async def test_the_migration_gives_existing_probes_a_lease(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.engine.begin() as connection:

            def to_0011(sync: object) -> None:
                config = alembic_config(database_url)
                config.attributes["connection"] = sync
                command.upgrade(config, "0011")

            await connection.run_sync(to_0011)
            old = datetime.now(UTC) - timedelta(hours=1)
            await connection.execute(
                text(
                    "INSERT INTO probes"
                    " (id, owner, kind, status, created_at, updated_at, done, total, request)"
                    " VALUES ('probe-old', 'anonymous', 'bias', 'running', :t, :t, 0, 2, '{}')"
                ),
                {"t": old},
            )
        await db.migrate()
        async with db.session() as session, session.begin():
            failed = await repo.fail_abandoned(session, owner="anonymous", now=datetime.now(UTC), lease=60)
            assert failed == 1
            row = await repo.get_probe(session, "probe-old", owner="anonymous")
            assert row is not None
            assert (row.status, row.error) == ("failed", repo.INTERRUPTED)
    finally:
        await db.engine.dispose()


def test_a_heartbeat_must_fit_twice_in_the_lease() -> None:
    with pytest.raises(ValueError, match="probe_heartbeat_seconds"):
        openai_settings(probe_lease_seconds=10, probe_heartbeat_seconds=6)
    assert openai_settings().probe_heartbeat_seconds * 2 <= openai_settings().probe_lease_seconds
