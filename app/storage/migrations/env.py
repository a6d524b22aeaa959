"""Alembic environment: runs on the connection the app hands over (or one from the URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.storage.schema import Base

config = context.config
target_metadata = Base.metadata

# Any number of replicas may start at once: one migrates, the others wait on this lock.
_PG_LOCK = 7_310_420_001


def _run(connection: Connection) -> None:
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    # The command line (`alembic upgrade head`, `alembic revision -m ...`): the configured URL.
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from app.settings import Settings

    async def _main() -> None:
        url = config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(_main())
