"""The database: one async engine per app, sessions, and Alembic migrations at start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.errors import ServiceUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    # Alembic is imported only to migrate (11 MB of modules): `python -m app` migrates in a
    # short-lived child process (app/storage/migrate.py), so the serving process never loads it.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


class Database:
    """Owns the engine and hands out sessions.

    Engines hide bound parameters from their error messages: those are prompts, outputs and
    conversation turns, and an error message ends up in a log line."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(
                url, connect_args={"timeout": 30}, hide_parameters=True
            )
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(
                url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True
            )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision."""
        async with self.engine.begin() as connection:
            await connection.run_sync(self._upgrade)

    def _upgrade(self, connection: Connection) -> None:
        from alembic import command

        config = alembic_config(self.url)
        config.attributes["connection"] = connection
        # "heads": migrations written on separate branches (each revising the same parent) all apply.
        command.upgrade(config, "heads")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session; a database that cannot be reached (down, restarting, the connection cut)
        is `ServiceUnavailable` (503, Retry-After), never an unexplained 500."""
        try:
            async with self.sessions() as session:
                yield session
        except (DBAPIError, ConnectionError) as exc:
            # The asyncpg dialect passes a refused connection through untranslated.
            if isinstance(exc, DBAPIError) and not unreachable(exc):
                if read_only(exc):
                    raise ServiceUnavailable(
                        "The database refuses writes right now; try again shortly.",
                        code="database_read_only",
                        retry_after=DATABASE_RETRY_AFTER,
                        transient=True,
                    ) from exc
                raise
            raise ServiceUnavailable(
                "The database is unavailable; try again shortly.",
                code="database_unavailable",
                retry_after=DATABASE_RETRY_AFTER,
                transient=True,
            ) from exc

    async def aclose(self) -> None:
        await self.engine.dispose()


DATABASE_RETRY_AFTER = 2.0
"""Seconds a client is told to wait when the database cannot be reached (a restart takes a few)."""
#: SQLSTATE classes of a lost or refused connection: 08 connection exception, 57 operator
#: intervention (shutting down, starting up).
_UNREACHABLE_SQLSTATES = ("08", "57")


def _sqlstates(exc: BaseException) -> list[str]:
    seen: set[int] = set()
    out: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        out.append(str(getattr(cause, "sqlstate", None) or ""))
        cause = cause.__cause__ or cause.__context__
    return out


def read_only(exc: DBAPIError) -> bool:
    """Whether the server refused a write because it serves reads only (a standby, a database
    set `default_transaction_read_only`): SQLSTATE 25006."""
    return "25006" in _sqlstates(exc)


def unreachable(exc: DBAPIError) -> bool:
    """Whether a database error means the server could not be reached, not that the statement
    was wrong."""
    if exc.connection_invalidated:
        return True
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionError | TimeoutError):  # refused, reset, timed out
            return True
        if str(getattr(cause, "sqlstate", None) or "").startswith(_UNREACHABLE_SQLSTATES):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers work while one writer writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
