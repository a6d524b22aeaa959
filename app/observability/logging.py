"""Logging: JSON or text lines on stderr, the level and format taken from the settings.

Every request ends in one line on the `genserve.access` logger whose fields travel in
`record.fields` (see `app.observability.requests`); no prompt text and no key is ever put there.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any

import orjson

from app.settings import Settings

ROOT_LOGGER = "genserve"
_HANDLER_NAME = "genserve-stderr"


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else TextFormatter()


def configure_logging(settings: Settings) -> None:
    """Send the service's own logs to stderr in the configured format and level (idempotent:
    building another app replaces the handler instead of adding one)."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(settings.log_level)
    for handler in list(logger.handlers):
        if handler.name == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.name = _HANDLER_NAME
    handler.setFormatter(formatter(settings))
    logger.addHandler(handler)
    # aiosqlite's debug lines quote every statement's parameters (prompts, outputs): never those.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


def uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's own loggers (start-up, errors) in the same format as the service's."""
    factory = f"{__name__}.{'JsonFormatter' if settings.log_format == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": factory}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": settings.log_level, "propagate": False},
            "uvicorn.error": {"level": settings.log_level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
