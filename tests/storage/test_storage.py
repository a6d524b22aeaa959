"""The database comes up by itself: SQLite by default, PostgreSQL by URL, migrated at start-up."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.main import create_app
from tests.conftest import make_settings, openai_settings, serving


async def test_default_sqlite_file_is_created_on_first_start(tmp_path: object) -> None:
    from pathlib import Path

    data_dir = Path(str(tmp_path)) / "fresh"
    app = create_app(openai_settings(data_dir=str(data_dir)))
    async with app.router.lifespan_context(app):
        assert (data_dir / "genserve.db").exists()


async def test_migrations_run_on_both_engines(database_url: str) -> None:
    app = create_app(openai_settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        db = app.state.genserve.db
        async with db.session() as session:
            version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version
    # A second start (another replica, a restart) finds the schema current and changes nothing.
    app = create_app(openai_settings(database_url=database_url))
    async with serving(app) as client:
        assert (await client.get("/healthz")).status_code == 200


def test_postgres_urls_get_the_async_driver() -> None:
    settings = make_settings(provider="local", database_url="postgresql://u@h/db")
    assert settings.resolved_database_url == "postgresql+asyncpg://u@h/db"


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db"])
def test_conventional_postgres_urls(url: str) -> None:
    assert make_settings(database_url=url).resolved_database_url.startswith("postgresql+asyncpg://")
