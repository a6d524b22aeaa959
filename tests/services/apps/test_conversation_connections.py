"""No database connection (and no PostgreSQL row lock) is held while a conversation's reply is
generated, streamed or not: a slow upstream cannot starve the connection pool."""

from __future__ import annotations

import asyncio

import pytest
import respx
from sqlalchemy import text

from tests.services.apps.test_conversations import (
    Upstream,
    conversation_app,
    new_conversation,
    running,
    upstream_called,
)


@pytest.fixture
def mock(upstream: respx.MockRouter) -> Upstream:
    return Upstream(upstream)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_reply_holds_no_connection_while_it_is_generated(
    database_url: str, mock: Upstream, stream: bool
) -> None:
    mock.delay = 1.0
    app = conversation_app(database_url)
    async for client in running(app):
        pool = app.state.genserve.db.engine.pool
        conversation = await new_conversation(client)
        body = {"content": "slow", "stream": stream}
        reply = asyncio.create_task(client.post(f"/v1/conversations/{conversation}/messages", json=body))
        await upstream_called(mock, 1)  # the reply is being generated now
        # Background workers (ingestion, batches) poll with short sessions of their own: wait
        # for theirs to end, well within the reply's generation (1 s), then count.
        for _ in range(50):
            if pool.checkedout() == 0 or reply.done():
                break
            await asyncio.sleep(0.01)
        assert not reply.done()
        held = pool.checkedout()
        if app.state.genserve.db.url.startswith("postgresql"):
            async with app.state.genserve.db.engine.connect() as connection:
                locks = (
                    await connection.execute(
                        text(
                            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                            "WHERE c.relname = 'conversations' AND l.mode = 'RowShareLock' "
                            "AND l.pid <> pg_backend_pid()"
                        )
                    )
                ).scalar_one()
            assert locks == 0
        assert held == 0, f"{held} connection(s) held across the generation"
        assert (await reply).status_code == 200
