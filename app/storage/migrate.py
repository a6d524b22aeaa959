"""`python -m app.storage.migrate`: bring the configured database to the newest revision, then exit.

`python -m app` runs this in a child process before it serves, so that Alembic (imported only to
migrate) never takes memory in the serving process. The child reads the database URL the parent
resolved (its `--data-dir` included) on its standard input (`-`), never from its command line,
where a password would show in `ps`; run by hand, it takes the URL from the settings.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from app.settings import Settings
from app.storage.db import Database


async def migrate(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.aclose()


def migrate_in_child(settings: Settings) -> None:
    """Migrate `settings`' database in a child process; raise if it fails."""
    url = settings.resolved_database_url
    subprocess.run([sys.executable, "-m", "app.storage.migrate", "-"], input=url.encode(), check=True)


def main() -> None:
    url = sys.stdin.read().strip() if sys.argv[1:] == ["-"] else Settings().resolved_database_url
    asyncio.run(migrate(url))


if __name__ == "__main__":
    main()
