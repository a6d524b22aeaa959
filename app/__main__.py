"""`python -m app`: start the service with uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from app.main import create_app
from app.observability.logging import uvicorn_log_config
from app.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        log_config=uvicorn_log_config(settings),
        access_log=False,
    )


if __name__ == "__main__":
    main()
