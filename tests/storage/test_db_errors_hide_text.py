"""A database failure never writes a request's text to the logs: SQLAlchemy's error messages
quote the bound parameters unless the engine hides them."""

from __future__ import annotations

import asyncio
import logging
import traceback

import httpx
import pytest
import respx
from sqlalchemy import text

from app.main import create_app
from app.observability.logging import JsonFormatter
from tests.conftest import openai_settings
from tests.upstream_faults import ok

MARKER = "marker-4d1f-private-prompt-text"


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every captured record as the service writes it (exceptions and their causes included)."""
    formatter = JsonFormatter()
    lines = []
    for record in caplog.records:
        lines.append(formatter.format(record))
        if record.exc_info and record.exc_info[1] is not None:
            lines.append("".join(traceback.format_exception(record.exc_info[1])))
    return lines


async def test_a_broken_database_logs_no_prompt_text(
    database_url: str, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="genserve")
    upstream.post("/chat/completions").mock(return_value=ok("fine"))
    app = create_app(openai_settings(database_url=database_url, store_text=True))
    async with app.router.lifespan_context(app):
        state = app.state.genserve
        async with state.db.engine.begin() as connection:
            for table in ("generation_records", "conversations"):
                await connection.execute(text(f"ALTER TABLE {table} RENAME TO {table}_gone"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test") as client:
            r = await client.post("/v1/generate", json={"prompt": MARKER, "max_tokens": 5})
            assert r.status_code == 200  # the answer does not wait for its record
            r = await client.post("/v1/conversations", json={"system": MARKER})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "database_unavailable"
            assert MARKER not in r.text
        for _ in range(500):  # until the record writer has met the broken table
            if any("generation records" in rec.getMessage() for rec in caplog.records):
                break
            await asyncio.sleep(0.01)
        lines = log_lines(caplog)
        assert any("generation records" in line for line in lines)
        assert any("SQL" in line for line in lines), "the database errors were logged"
        assert [line for line in lines if MARKER in line] == []
        async with state.db.engine.begin() as connection:  # let shutdown drain the queue
            for table in ("generation_records", "conversations"):
                await connection.execute(text(f"ALTER TABLE {table}_gone RENAME TO {table}"))
