"""`python -m app`: start the service with uvicorn on the configured host and port."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from app.main import create_app
from app.observability.logging import configure_logging, uvicorn_log_config
from app.settings import Settings
from app.storage.migrate import migrate_in_child


def parse_args(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Command-line settings, which win over the environment and `.env`.

    The container image gives its own facts this way (listen on 0.0.0.0:8000, data on /data), so
    that an environment meant for `make serve` (a copied `.env`) cannot move them."""
    parser = argparse.ArgumentParser(
        prog="python -m app", description="Serve genserve. Every other setting: environment or .env."
    )
    parser.add_argument("--host", help="interface to listen on (GENSERVE_HOST)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (GENSERVE_PORT)")
    parser.add_argument("--data-dir", type=Path, help="where SQLite lives (GENSERVE_DATA_DIR)")
    args = parser.parse_args(argv)
    return {name: value for name, value in vars(args).items() if value is not None}


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings(**parse_args(argv))  # type: ignore[arg-type]
    # Logging is process-wide: configured by the process's entry point, not by each app built.
    configure_logging(settings)
    if settings.database_auto_migrate:
        # In a child process: the serving process then never imports Alembic (11 MB).
        migrate_in_child(settings)
        settings = settings.model_copy(update={"database_auto_migrate": False})
    uvicorn.run(create_app(settings), **server_options(settings))


def server_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn serves the app: the settings' address, the fast loop and parser, no access log
    of its own (the service writes one: app.observability.requests), and the proxies it trusts."""
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": settings.log_level.lower(),
        "log_config": uvicorn_log_config(settings),
        "access_log": False,
        # The client's address from X-Forwarded-For, only when the peer is a trusted proxy.
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        # On SIGTERM uvicorn stops accepting, lets in-flight requests and streams finish for up
        # to this long, then runs the lifespan's shutdown (upstream clients, model, database).
        "timeout_graceful_shutdown": settings.shutdown_timeout,
    }


if __name__ == "__main__":
    main()
