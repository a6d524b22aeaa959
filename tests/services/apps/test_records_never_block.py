"""A full generation-records queue (the database down) drops records, never a response."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
import respx
from sqlalchemy import text

from app.main import create_app
from tests.conftest import openai_settings
from tests.upstream_faults import ok


async def test_generations_answer_while_records_cannot_be_stored(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.post("/chat/completions").mock(return_value=ok("fine"))
    app = create_app(openai_settings(records_max_pending=2))
    async with app.router.lifespan_context(app):
        db = app.state.genserve.db
        async with db.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE generation_records RENAME TO generation_records_gone"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test") as client:
            for _ in range(6):
                async with asyncio.timeout(10):  # before: the third request waited forever
                    r = await client.post("/v1/generate", json={"prompt": "hi", "max_tokens": 5})
                assert r.status_code == 200
            metrics = (await client.get("/metrics")).text
        dropped = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("genserve_records_dropped")
        )
        assert dropped >= 3
        assert any(rec.levelno == logging.WARNING and "dropped" in rec.getMessage() for rec in caplog.records)
        async with db.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE generation_records_gone RENAME TO generation_records"))
