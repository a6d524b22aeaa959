"""`python -m app`: start the service with uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from app.main import create_app
from app.observability.logging import configure_logging, uvicorn_log_config
from app.settings import Settings


def main() -> None:
    settings = Settings()
    # Logging is process-wide: configured by the process's entry point, not by each app built.
    configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        log_config=uvicorn_log_config(settings),
        access_log=False,  # the service writes its own access line (app.observability.requests)
        # On SIGTERM uvicorn stops accepting, lets in-flight requests and streams finish for up
        # to this long, then runs the lifespan's shutdown (upstream clients, model, database).
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )


if __name__ == "__main__":
    main()
