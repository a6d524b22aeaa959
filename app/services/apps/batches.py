"""Batches (`/v1/batches`): many requests in one file, answered into an output and an error file.

A batch's lifecycle is OpenAI's: `validating` (the input file is read and checked line by line:
JSON, `custom_id` unique, `method` POST, `url` the batch's endpoint; any problem fails the batch
with `errors.data[]`) -> `in_progress` (each line runs through the same application service and
renderer as its endpoint, as the batch's key rebuilt from the key store at run time) ->
`finalizing` (the results become an output and an error file of purpose `batch_output`) ->
`completed`. `cancel` moves an unfinished batch to `cancelling` and then `cancelled` (what ran is
kept in its files); a batch past its 24 h window is `expired` (the lines that did not run are in
the error file with `batch_expired`).

The work is durable: every replica runs a worker. Validating and finalizing take the batch's
lease (FOR UPDATE SKIP LOCKED on PostgreSQL); in progress, replicas claim slices of pending lines
under line leases, so several run one batch together. Each line's answer is written as soon as it
arrives (a line moves from pending to done exactly once, and the counters move in the same
transaction). A replica that dies leaves its leases to run out; another claims what is pending.

How a line runs is handed in (`LineExecutor`): the API layer knows each endpoint's body model and
renderer; this module only knows that a line goes in and a status and a body come out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select, update

from app.clock import Clocks, as_utc, unix
from app.errors import Conflict, InvalidRequest, NotFound, error_body
from app.services.apps.files import FileService
from app.services.generation.caller import Client
from app.services.generation.context import RequestContext
from app.storage.batches import LEASED, BatchLineRow, BatchRow
from app.storage.db import Database

log = logging.getLogger(__name__)

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/generate")
"""What a batch may run (the wire model's `BatchEndpoint`)."""
MAX_LINES = 50_000
"""OpenAI's limit on requests in one batch."""
MAX_ERRORS = 100
"""Validation errors reported in `errors.data` (the first ones, by line)."""
WINDOW = timedelta(hours=24)
CANCELLABLE = ("validating", "in_progress")
SLICE_FACTOR = 4
"""Lines claimed at once, as a multiple of the concurrency: fewer claims, and a slow line holds up
only the tail of its slice."""
MAX_BACKOFF = 60.0
"""A 429 that clears within this many seconds (a per-minute limit, or an upstream's Retry-After)
is waited out, not failed; one that takes longer (a daily or monthly budget) fails the line."""
MAX_WAITS = 20
"""Backoffs of one line before its 429 stands (the batch's 24 h window bounds them all)."""


@dataclass(frozen=True, slots=True)
class LineResult:
    """What the endpoint answered to one line: its HTTP status and body."""

    status_code: int
    body: dict[str, Any]
    retry_after: float | None = None
    """For a 429: seconds until the limit lets it through (a budget: hours; a rate: seconds)."""


LineExecutor = Callable[[RequestContext, str, dict[str, Any]], Awaitable[LineResult]]
"""Runs one request body against an endpoint (`/v1/chat/completions`, ...) as the context's caller."""
ClientLookup = Callable[[str], Awaitable[Client | None]]
"""The client of a key id now (None: revoked, expired or gone)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as the API shows it."""

    id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    metadata: dict[str, str] | None
    model: str | None
    errors: list[dict[str, Any]] | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    times: dict[str, int | None]
    """`created_at`, `in_progress_at`, ... `cancelled_at`, `expires_at` as unix seconds."""


_TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _view(row: BatchRow) -> Batch:
    times: dict[str, int | None] = {}
    for name in _TIMES:
        value = getattr(row, name)
        times[name] = unix(value) if value is not None else None
    return Batch(
        id=row.id,
        owner=row.owner,
        endpoint=row.endpoint,
        input_file_id=row.input_file_id,
        completion_window=row.completion_window,
        status=row.status,
        metadata=row.metadata_,
        model=row.model,
        errors=row.errors,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        total=row.total,
        completed=row.completed,
        failed=row.failed,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        times=times,
    )


@dataclass(frozen=True, slots=True)
class ParsedLine:
    seq: int
    custom_id: str
    body: str
    model: str | None


def _problem(code: str, line: int | None, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def parse_input(
    content: bytes, endpoint: str, *, max_line_bytes: int, max_lines: int = MAX_LINES
) -> tuple[list[ParsedLine], list[dict[str, Any]]]:
    """The input file's requests, or the problems that fail the batch (each with its line)."""
    lines: list[ParsedLine] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    raw_lines = content.split(b"\n")
    numbered = [(n, raw) for n, raw in enumerate(raw_lines, 1) if raw.strip()]
    if not numbered:
        return [], [_problem("empty_file", None, "The input file contains no requests.")]
    if len(numbered) > max_lines:
        message = f"The input file has {len(numbered)} requests; a batch may have at most {max_lines}."
        return [], [_problem("too_many_requests", None, message)]
    for n, raw in numbered:
        if len(problems) >= MAX_ERRORS:
            break
        if len(raw) > max_line_bytes:
            problems.append(_problem("line_too_large", n, f"The line is larger than {max_line_bytes} bytes."))
            continue
        try:
            item = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(_problem("invalid_json_line", n, "The line is not valid UTF-8."))
            continue
        except (ValueError, RecursionError):
            problems.append(_problem("invalid_json_line", n, "The line is not valid JSON."))
            continue
        if not isinstance(item, dict):
            problems.append(_problem("invalid_json_line", n, "The line is not a JSON object."))
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
            problems.append(
                _problem("missing_required_parameter", n, "custom_id must be a string.", "custom_id")
            )
            continue
        if item.get("method") != "POST":
            problems.append(_problem("invalid_method", n, "method must be POST.", "method"))
            continue
        if item.get("url") != endpoint:
            message = f"url must be the batch's endpoint, {endpoint}."
            problems.append(_problem("invalid_url", n, message, "url"))
            continue
        body = item.get("body")
        if not isinstance(body, dict):
            problems.append(_problem("missing_required_parameter", n, "body must be a JSON object.", "body"))
            continue
        if custom_id in seen:
            message = f"The custom_id '{custom_id[:64]}' is used by an earlier line."
            problems.append(_problem("duplicate_custom_id", n, message, "custom_id"))
            continue
        seen.add(custom_id)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        lines.append(ParsedLine(seq=n, custom_id=custom_id, body=json.dumps(body), model=model))
    return lines, problems


def _usage(body: dict[str, Any]) -> tuple[int, int]:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    given = usage.get("input_tokens", usage.get("prompt_tokens", 0))
    made = usage.get("output_tokens", usage.get("completion_tokens", 0))
    return (given if isinstance(given, int) else 0), (made if isinstance(made, int) else 0)


@dataclass(frozen=True, slots=True)
class _Answer:
    line: BatchLineRow
    result: LineResult
    request_id: str


class _GroupCommit:
    """Answers written in groups: the answers that arrive while one transaction is in flight are
    written together by the next (at most `limit` per transaction). `add` returns once its own
    answer is committed (or raises what the write raised: the line stays pending under its lease,
    to be run again when the lease runs out), so a slice ends only when all its answers are in."""

    def __init__(self, write: Callable[[Sequence[_Answer]], Awaitable[None]], *, limit: int) -> None:
        self._write = write
        self._limit = max(1, limit)
        self._waiting: list[tuple[_Answer, asyncio.Future[None]]] = []
        self._in_flight = asyncio.Lock()

    async def add(self, answer: _Answer) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((answer, done))
        while not done.done():
            async with self._in_flight:
                if done.done():
                    break
                group = self._waiting[: self._limit]
                del self._waiting[: self._limit]
                try:
                    await self._write([item for item, _ in group])
                except Exception as error:
                    for _, future in group:
                        if future is not done:
                            future.set_exception(error)
                            future.exception()  # retrieved: its owner re-raises it from `done`
                    raise
                for _, future in group:
                    future.set_result(None)
        await done


class _LeaseLost(Exception):
    """Our lease on a batch was taken (it ran out and another replica claimed the batch)."""


class BatchService:
    """Creates, shows, lists and cancels batches, and runs them (`run_worker`)."""

    def __init__(
        self,
        db: Database,
        files: FileService,
        clocks: Clocks,
        *,
        execute: LineExecutor,
        clients: ClientLookup,
        lease_seconds: float = 60.0,
        concurrency: int = 8,
        max_line_bytes: int = 1 << 20,
    ) -> None:
        self._db = db
        self._files = files
        self._clocks = clocks
        self._execute = execute
        self._clients = clients
        self._lease = timedelta(seconds=lease_seconds)
        self._concurrency = concurrency
        self._max_line_bytes = max_line_bytes
        self._replica = uuid.uuid4().hex[:16]
        self._wake = asyncio.Event()
        self._stopping = False

    # --- the API ------------------------------------------------------------------------------

    async def create(
        self,
        owner: str,
        *,
        input_file_id: str,
        endpoint: str,
        metadata: dict[str, str] | None = None,
        output_expires_seconds: int | None = None,
    ) -> Batch:
        """A new batch of `owner`'s file (404 for a file it cannot see; 400 unless purpose `batch`)."""
        stored = await self._files.get(owner, input_file_id)
        if stored.purpose != "batch":
            raise InvalidRequest(
                f"The file {input_file_id} was not uploaded with purpose 'batch'.",
                param="input_file_id",
                code="invalid_file_purpose",
            )
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}.", param="endpoint")
        now = self._clocks.now().replace(microsecond=0)
        row = BatchRow(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            owner=owner,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window="24h",
            status="validating",
            metadata_=metadata,
            output_expires_seconds=output_expires_seconds,
            total=0,
            completed=0,
            failed=0,
            input_tokens=0,
            output_tokens=0,
            created_at=now,
            expires_at=now + WINDOW,
        )
        async with self._db.session() as session, session.begin():
            session.add(row)
        self._wake.set()
        return _view(row)

    async def _row(self, owner: str | None, batch_id: str) -> BatchRow:
        async with self._db.session() as session:
            row = await session.get(BatchRow, batch_id)
        if row is None or (owner is not None and row.owner != owner):
            raise NotFound(f"No such Batch object: {batch_id}", param="batch_id", code="batch_not_found")
        return row

    async def get(self, owner: str | None, batch_id: str) -> Batch:
        return _view(await self._row(owner, batch_id))

    async def list_batches(
        self, owner: str, *, limit: int = 20, after: str | None = None
    ) -> tuple[list[Batch], bool]:
        """A page of `owner`'s batches, newest first, and whether more follow."""
        query = select(BatchRow).where(BatchRow.owner == owner)
        if after is not None:
            cursor = await self._row(owner, after)
            query = query.where(
                or_(
                    BatchRow.created_at < cursor.created_at,
                    and_(BatchRow.created_at == cursor.created_at, BatchRow.id < cursor.id),
                )
            )
        query = query.order_by(BatchRow.created_at.desc(), BatchRow.id.desc()).limit(limit + 1)
        async with self._db.session() as session:
            rows = list((await session.execute(query)).scalars())
        return [_view(row) for row in rows[:limit]], len(rows) > limit

    async def cancel(self, owner: str, batch_id: str) -> Batch:
        """`cancelling` (the worker then stops it and keeps what ran); 409 once it is finalizing or done."""
        row = await self._row(owner, batch_id)
        if row.status == "cancelling":
            return _view(row)
        async with self._db.session() as session, session.begin():
            moved = await session.execute(
                update(BatchRow)
                .where(BatchRow.id == row.id, BatchRow.status.in_(CANCELLABLE))
                .values(status="cancelling", cancelling_at=self._clocks.now())
            )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            current = await self._row(owner, batch_id)
            if current.status == "cancelling":
                return _view(current)
            raise Conflict(
                f"Cannot cancel a batch with status '{current.status}'.",
                param="batch_id",
                code="batch_not_cancellable",
            )
        self._wake.set()
        return await self.get(owner, batch_id)

    # --- the worker ---------------------------------------------------------------------------

    async def run_one(self) -> bool:
        """One step of work, if any is due: validate a batch, finalize one, or run one slice of
        some batch's lines; False when there was nothing to do."""
        try:
            row = await self._claim()
            if row is not None:
                await self._advance(row)
                return True
            return await self._run_slice() or await self._settle()
        except _LeaseLost:
            return True  # another replica has it now

    async def _settle(self) -> bool:
        """Batches in progress with no line left to run, or past their window, are finalizing
        (True when one was)."""
        now = self._clocks.now()
        pending = (
            select(BatchLineRow.seq)
            .where(BatchLineRow.batch_id == BatchRow.id, BatchLineRow.status == "pending")
            .exists()
        )
        async with self._db.session() as session, session.begin():
            settled = await session.execute(
                update(BatchRow)
                .where(BatchRow.status == "in_progress", or_(~pending, BatchRow.expires_at <= now))
                .values(status="finalizing", finalizing_at=now)
                .execution_options(synchronize_session=False)
            )
        return bool(settled.rowcount)  # type: ignore[attr-defined]

    async def _claim(self) -> BatchRow | None:
        """A batch to validate or finalize whose lease is free (never taken, or run out), now ours."""
        now = self._clocks.now()
        async with self._db.session() as session, session.begin():
            query = (
                select(BatchRow)
                .where(
                    BatchRow.status.in_(LEASED),
                    or_(BatchRow.lease_until.is_(None), BatchRow.lease_until < now),
                )
                .order_by(BatchRow.created_at)
                .limit(1)
            )
            if not self._db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            row = (await session.execute(query)).scalar_one_or_none()
            if row is None:
                return None
            # Conditional on the lease we read: without row locks (SQLite) only one replica wins.
            lease_read = (
                BatchRow.lease_until.is_(None)
                if row.lease_until is None
                else (BatchRow.lease_until == row.lease_until)
            )
            claimed = await session.execute(
                update(BatchRow)
                .where(BatchRow.id == row.id, lease_read)
                .values(leased_by=self._replica, lease_until=now + self._lease)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            await session.refresh(row)
            return row

    async def _set(self, batch_id: str, *, release: bool = False, **values: Any) -> BatchRow:
        """Change our batch (only while the lease is ours), renewing or releasing the lease."""
        lease = (
            {"leased_by": None, "lease_until": None}
            if release
            else {"lease_until": self._clocks.now() + self._lease}
        )
        async with self._db.session() as session, session.begin():
            done = await session.execute(
                update(BatchRow)
                .where(BatchRow.id == batch_id, BatchRow.leased_by == self._replica)
                .values(**values, **lease)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise _LeaseLost
            row = await session.get(BatchRow, batch_id, populate_existing=True)
        assert row is not None
        return row

    async def _advance(self, row: BatchRow) -> None:
        try:
            if row.status == "validating":
                await self._validate(row)
            elif row.status == "finalizing":
                pending = await self._pending_count(row.id)
                ended = "expired" if pending and as_utc(row.expires_at) <= self._clocks.now() else "completed"
                await self._finalize(row, ended)
            elif row.status == "cancelling":
                await self._finalize(row, "cancelled")
        except _LeaseLost:
            raise
        except Exception:
            log.exception("a batch could not be advanced; its lease will run out and it is retried")

    async def _pending_count(self, batch_id: str) -> int:
        async with self._db.session() as session:
            query = select(func.count()).where(
                BatchLineRow.batch_id == batch_id, BatchLineRow.status == "pending"
            )
            return int((await session.execute(query)).scalar_one())

    async def _validate(self, row: BatchRow) -> None:
        now = self._clocks.now()
        try:
            content = await self._files.content(row.owner, row.input_file_id)
        except NotFound:
            problems = [_problem("invalid_file", None, "The input file was deleted.", "input_file_id")]
            await self._set(row.id, release=True, status="failed", errors=problems, failed_at=now)
            return
        lines, problems = parse_input(content, row.endpoint, max_line_bytes=self._max_line_bytes)
        if problems:
            await self._set(row.id, release=True, status="failed", errors=problems, failed_at=now)
            return
        async with self._db.session() as session, session.begin():
            current = await session.get(BatchRow, row.id, with_for_update=not self._db.is_sqlite)
            if current is None or current.leased_by != self._replica:
                raise _LeaseLost
            exists = await session.execute(
                select(BatchLineRow.seq).where(BatchLineRow.batch_id == row.id).limit(1)
            )
            if exists.first() is None:  # a replica that died after this step wrote them already
                session.add_all(
                    BatchLineRow(
                        batch_id=row.id,
                        seq=line.seq,
                        custom_id=line.custom_id,
                        body=line.body,
                        status="pending",
                    )
                    for line in lines
                )
            models = {line.model for line in lines if line.model}
            if current.status == "validating":
                current.status = "in_progress"
                current.in_progress_at = now
            current.total = len(lines)
            current.model = models.pop() if len(models) == 1 else None
            current.leased_by = None
            current.lease_until = None
        self._wake.set()

    async def _claim_lines(self) -> tuple[BatchRow, list[BatchLineRow]] | None:
        """The next pending lines (a slice: SLICE_FACTOR times the concurrency) of a batch in
        progress whose leases are free, now ours: replicas share one batch by claiming different
        lines. The update re-checks that each lease is free, so without row locks (SQLite) a line
        still goes to one replica only."""
        now = self._clocks.now()
        until = now + self._lease
        free = or_(BatchLineRow.lease_until.is_(None), BatchLineRow.lease_until < now)
        async with self._db.session() as session, session.begin():
            first = (
                select(BatchLineRow.batch_id)
                .join(BatchRow, BatchRow.id == BatchLineRow.batch_id)
                .where(
                    BatchRow.status == "in_progress",
                    BatchRow.expires_at > now,
                    BatchLineRow.status == "pending",
                    free,
                )
                .order_by(BatchRow.created_at)
                .limit(1)
            )
            batch_id = (await session.execute(first)).scalar_one_or_none()
            if batch_id is None:
                return None
            query = (
                select(BatchLineRow.seq)
                .where(BatchLineRow.batch_id == batch_id, BatchLineRow.status == "pending", free)
                .order_by(BatchLineRow.seq)
                .limit(self._concurrency * SLICE_FACTOR)
            )
            if not self._db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            seqs = list((await session.execute(query)).scalars())
            if not seqs:
                return None
            await session.execute(
                update(BatchLineRow)
                .where(
                    BatchLineRow.batch_id == batch_id,
                    BatchLineRow.seq.in_(seqs),
                    BatchLineRow.status == "pending",
                    free,
                )
                .values(leased_by=self._replica, lease_until=until)
                .execution_options(synchronize_session=False)
            )
            mine = (
                select(BatchLineRow)
                .where(
                    BatchLineRow.batch_id == batch_id,
                    BatchLineRow.seq.in_(seqs),
                    BatchLineRow.leased_by == self._replica,
                    BatchLineRow.lease_until == until,
                )
                .order_by(BatchLineRow.seq)
            )
            lines = list((await session.execute(mine)).scalars())
            batch = await session.get(BatchRow, batch_id)
        if batch is None or not lines:
            return None
        return batch, lines

    async def _renew_lines(self, lines: Sequence[BatchLineRow]) -> None:
        """Keep our claim on lines still running (a slow upstream outlives a lease)."""
        if not lines:
            return
        batch_id = lines[0].batch_id
        async with self._db.session() as session, session.begin():
            await session.execute(
                update(BatchLineRow)
                .where(
                    BatchLineRow.batch_id == batch_id,
                    BatchLineRow.seq.in_([line.seq for line in lines]),
                    BatchLineRow.leased_by == self._replica,
                    BatchLineRow.status == "pending",
                )
                .values(lease_until=self._clocks.now() + self._lease)
            )

    async def _heartbeat(self, lines: Sequence[BatchLineRow]) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            with contextlib.suppress(Exception):
                await self._renew_lines(lines)

    async def _run_slice(self) -> bool:
        """Run one claimed slice of lines; False when no line was due anywhere."""
        claimed = await self._claim_lines()
        if claimed is None:
            return False
        row, lines = claimed
        client = await self._clients(row.owner)
        beat = asyncio.create_task(self._heartbeat(lines))
        slots = asyncio.Semaphore(self._concurrency)
        answers = _GroupCommit(lambda group: self._answer(row, group), limit=len(lines))

        async def run(line: BatchLineRow) -> None:
            async with slots:
                request_id, result = await self._run_line(row, client, line)
            await answers.add(_Answer(line, result, request_id))

        try:
            await asyncio.gather(*(run(line) for line in lines))
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        return True

    async def _run_line(
        self, row: BatchRow, client: Client | None, line: BatchLineRow
    ) -> tuple[str, LineResult]:
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        if client is None:
            result = LineResult(
                401,
                error_body(
                    "The batch's API key was revoked or has expired.",
                    "invalid_request_error",
                    code="invalid_api_key",
                ),
            )
        else:
            result = await self._attempts(row, client, line, request_id)
        return request_id, result

    async def _attempts(
        self, row: BatchRow, client: Client, line: BatchLineRow, request_id: str
    ) -> LineResult:
        """Run the line, waiting out short 429s (renewing the lease while it waits)."""
        for _ in range(MAX_WAITS):
            ctx = RequestContext(caller=client, request_id=request_id)
            try:
                result = await self._execute(ctx, row.endpoint, json.loads(line.body))
            except Exception:
                log.exception("a batch line failed unexpectedly")
                body = error_body("The server had an error processing the request.", "server_error")
                return LineResult(500, body)
            wait = result.retry_after
            if result.status_code != 429 or wait is None or wait > MAX_BACKOFF:
                return result
            await asyncio.sleep(wait)  # the slice's heartbeat keeps the line ours meanwhile
        return result

    async def _answer(self, row: BatchRow, group: Sequence[_Answer]) -> None:
        """Write a group of lines' answers and move the counters with them, in one transaction:
        each line only if it is still pending, so a line is answered exactly once, and the
        counters move by the lines this transaction answered."""
        completed = failed = given_total = made_total = 0
        async with self._db.session() as session, session.begin():
            for answer in group:
                result = answer.result
                done = await session.execute(
                    update(BatchLineRow)
                    .where(
                        BatchLineRow.batch_id == answer.line.batch_id,
                        BatchLineRow.seq == answer.line.seq,
                        BatchLineRow.status == "pending",
                    )
                    .values(
                        status="done",
                        status_code=result.status_code,
                        result=orjson.dumps(result.body).decode(),
                        request_id=answer.request_id,
                    )
                    .execution_options(synchronize_session=False)
                )
                if done.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # answered already (by a replica that held the line before us)
                if result.status_code == 200:
                    given, made = _usage(result.body)
                    completed, given_total, made_total = completed + 1, given_total + given, made_total + made
                else:
                    failed += 1
            if completed or failed:
                await session.execute(
                    update(BatchRow)
                    .where(BatchRow.id == row.id)
                    .values(
                        completed=BatchRow.completed + completed,
                        failed=BatchRow.failed + failed,
                        input_tokens=BatchRow.input_tokens + given_total,
                        output_tokens=BatchRow.output_tokens + made_total,
                    )
                )

    async def _finalize(self, row: BatchRow, status: str) -> None:
        """Write the output and error files and end the batch with `status`."""
        now = self._clocks.now()
        output: list[bytes] = []
        errors: list[bytes] = []
        unrun = 0
        async with self._db.session() as session:
            query = select(BatchLineRow).where(BatchLineRow.batch_id == row.id).order_by(BatchLineRow.seq)
            for line in (await session.execute(query)).scalars():
                out = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line.custom_id}
                if line.status == "done":
                    response = {
                        "status_code": line.status_code,
                        "request_id": line.request_id,
                        "body": orjson.Fragment(line.result or "{}"),
                    }
                    record = orjson.dumps({**out, "response": response, "error": None})
                    (output if line.status_code == 200 else errors).append(record)
                elif status == "expired":
                    unrun += 1
                    error = {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired.",
                    }
                    errors.append(orjson.dumps({**out, "response": None, "error": error}))
        output_id = await self._write(row, "output", output)
        error_id = await self._write(row, "error", errors)
        moment = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[status]
        values: dict[str, Any] = {
            "status": status,
            moment: now,
            "output_file_id": output_id,
            "error_file_id": error_id,
        }
        if unrun:
            values["failed"] = BatchRow.failed + unrun
        await self._set(row.id, release=True, **values)

    async def _write(self, row: BatchRow, kind: str, records: Sequence[bytes]) -> str | None:
        if not records:
            return None
        stored = await self._files.create(
            row.owner,
            filename=f"{row.id}_{kind}.jsonl",
            content=b"\n".join(records) + b"\n",
            purpose="batch_output",
            content_type="application/jsonl",
            expires_after_seconds=row.output_expires_seconds,
        )
        return stored.id

    async def run_worker(self, poll_seconds: float) -> None:
        """Advance due batches until stopped; wakes when a batch is created or cancelled, else
        every `poll_seconds` (to pick up the batches of replicas that died)."""
        while not self._stopping:
            try:
                if await self.run_one():
                    continue
            except Exception:
                log.warning("the batch worker could not reach the database", exc_info=True)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=poll_seconds)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
