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


async def test_the_server_migrates_in_a_child_process(database_url: str) -> None:
    """`python -m app` migrates in a child process (the URL on its stdin, not its command line),
    then serves without migrating again."""
    from app.storage.migrate import migrate_in_child

    migrate_in_child(openai_settings(database_url=database_url))
    app = create_app(openai_settings(database_url=database_url, database_auto_migrate=False))
    async with app.router.lifespan_context(app):
        async with app.state.genserve.db.session() as session:
            version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version


def test_the_serving_process_starts_without_alembic_numpy_or_scipy() -> None:
    """Alembic is imported only to migrate, numpy and scipy only to report a bias probe: a server
    starts without their 90 MB."""
    import subprocess
    import sys

    heavy = "('alembic', 'numpy', 'scipy')"
    imports = f"import sys, app.__main__; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    out = subprocess.run([sys.executable, "-c", imports], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
