"""A bounded journal on the replica's disk for rows the database could not take (down, read-only).

Rows are appended as JSON lines, each with a unique id, and fsynced before `append` returns: a
replica killed with rows in it finds them at its next start. `drain` hands them, in the order they
were appended, to the handler of their kind, which must be idempotent (records are inserted with
ON CONFLICT DO NOTHING, usage batches are applied once per id through `spool_applied`), and
truncates the journal only after every handler committed: a crash mid-drain replays, never
duplicates. Once it holds `max_bytes` (passed by one batch at most), `append` refuses
(`SpoolFull`): the only reason a generation is refused while the database is away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("genserve.spool")

Handler = Callable[[list[tuple[str, Any]]], Awaitable[None]]
"""Stores (id, payload) pairs of one kind, idempotently, in one transaction."""


class SpoolFull(Exception):
    """The spool holds `max_bytes` already."""


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    raise TypeError(f"not JSON: {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$dt" in obj:
            return datetime.fromisoformat(obj["$dt"])
        if "$d" in obj:
            return date.fromisoformat(obj["$d"])
    return obj


class Spool:
    """Appends, counts and drains the rows waiting for the database."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.path = directory / "spool.jsonl"
        self.max_bytes = max_bytes
        self._handlers: dict[str, Handler] = {}
        self._lock = asyncio.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self.bytes = self.path.stat().st_size if self.path.exists() else 0
        self.rows = sum(1 for _ in self._read()) if self.bytes else 0
        if self.rows:
            log.warning(
                "spool holds %d rows from an earlier run; they are written when the database answers",
                self.rows,
            )

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    async def append(self, kind: str, payloads: list[Any]) -> None:
        """Journal payloads of `kind` (each gets a unique id); `SpoolFull` when it is full."""
        lines = "".join(
            json.dumps({"id": uuid.uuid4().hex, "kind": kind, "row": p}, default=_encode) + "\n"
            for p in payloads
        ).encode()
        async with self._lock:
            # Refused only once full: the guard that refuses generations reads the same test, so
            # a generation it admitted finds room (the spool may pass its bound by one batch).
            if self.full:
                raise SpoolFull(f"the spool holds {self.bytes} bytes of {self.max_bytes}")
            await asyncio.to_thread(self._write, lines)
            self.bytes += len(lines)
            self.rows += len(payloads)

    def _write(self, data: bytes) -> None:
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _read(self) -> list[dict[str, Any]]:
        out = []
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):  # torn by a crash mid-write: never acknowledged
                    break
                out.append(json.loads(line, object_hook=_decode))
        return out

    async def drain(self) -> int:
        """Store everything in the spool, in order; the handlers' errors propagate (the spool is
        kept, whole, for the next try). Returns how many rows were stored."""
        async with self._lock:
            if not self.rows:
                return 0
            entries = await asyncio.to_thread(self._read)
            # Consecutive runs of one kind keep the order across kinds too.
            start = 0
            while start < len(entries):
                kind = entries[start]["kind"]
                end = start
                while end < len(entries) and entries[end]["kind"] == kind and end - start < 500:
                    end += 1
                await self._handlers[kind]([(e["id"], e["row"]) for e in entries[start:end]])
                start = end
            await asyncio.to_thread(self.path.write_bytes, b"")
            n, self.rows, self.bytes = self.rows, 0, 0
            log.info("spool drained: %d rows stored", n)
            return n
