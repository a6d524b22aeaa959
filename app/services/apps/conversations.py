"""Conversations: stored turns, a history that fits the model's window, one reply at a time.

A reply is produced under the conversation's turn: an in-process lock (one waiter per
conversation per replica), then a claim on the conversation's row — written and committed in a
short transaction, with a lease that lapses if its replica dies — so replicas take turns as
well. No database connection is held while the reply is generated: the history is read in one
short session, and the user's message and the reply are stored together in another, numbered
after the turn the reply was generated from; if anything else appended meanwhile the reply is
refused with 409 instead of being stored out of order.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import Clocks
from app.errors import Conflict, InvalidRequest, NotFound
from app.providers.base import (
    Chunk,
    Message,
    ToolCall,
    ToolChoice,
    ToolChoiceNamed,
    ToolSpec,
    tool_messages,
)
from app.services.apps.grounding import Grounding, grounded_prompt, no_answer, no_answer_stream, passage_chars
from app.services.apps.presets.service import PresetService, SamplingChoice
from app.services.apps.retention import Retention
from app.services.generation.context import RequestContext
from app.services.generation.history import TokenCounter, fit_history
from app.services.generation.pipeline import (
    GenerationService,
    Job,
    Outcome,
    check_max_tokens,
    check_prompt_chars,
)
from app.services.generation.spec import GenerationSpec
from app.settings import ModelRoute
from app.storage import conversations as store
from app.storage.conversations import ConversationRow, MessageRow
from app.storage.db import Database

log = logging.getLogger("genserve.conversations")

_HISTORY_BATCH = 64


@dataclass(frozen=True, slots=True)
class Reply:
    """A stored reply: the generation's outcome and the turn number it was stored as."""

    outcome: Outcome
    conversation_id: str
    turn: int


@dataclass(frozen=True, slots=True)
class ReplyChunk:
    """A streamed text delta of the reply being generated as `generation_id`."""

    generation_id: str
    chunk: Chunk


@dataclass(frozen=True, slots=True)
class History:
    """One page of a conversation's turns."""

    conversation: ConversationRow
    messages: list[MessageRow]
    has_more: bool


class _KeyedLocks:
    """One asyncio lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str, wait: float) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(wait):
                    await lock.acquire()
            except TimeoutError:
                raise _busy(key, wait) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _busy(conversation_id: str, waited: float) -> Conflict:
    return Conflict(
        f"The conversation '{conversation_id}' is still answering another message "
        f"(waited {waited:.0f} s); try again shortly.",
        code="conversation_busy",
        retry_after=5,
    )


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(
        f"No conversation found with id '{conversation_id}'.",
        param="conversation_id",
        code="conversation_not_found",
    )


class ConversationService:
    """Creates, lists and deletes conversations, and answers their messages."""

    def __init__(
        self,
        db: Database,
        generation: GenerationService,
        presets: PresetService,
        *,
        lock_timeout: float = 120.0,
        lease: float = 300.0,
        clocks: Clocks | None = None,
        retention: Retention | None = None,
    ) -> None:
        self._db = db
        self._clocks = clocks or Clocks()
        self._retention = retention
        """Conversations untouched for longer than their retention answer 404 before any sweep."""
        self._generation = generation
        self._presets = presets
        self._lock_timeout = lock_timeout
        self._lease = lease
        """Seconds a claimed turn stays claimed if its replica dies before releasing it."""
        self._locks = _KeyedLocks()

    def _expired(self, row: ConversationRow) -> bool:
        return self._retention is not None and self._retention.expired("conversations", row.updated_at)

    # -- conversations -----------------------------------------------------------------------

    async def create(
        self,
        ctx: RequestContext,
        *,
        model: str | None,
        system: str | None,
        sampling: Mapping[str, Any],
        metadata: Mapping[str, str],
        preset: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> ConversationRow:
        if preset is not None and system:
            raise InvalidRequest(
                "Give either a preset (its system prompt is rendered from `inputs`) or a system "
                "prompt, not both.",
                param="system",
            )
        if inputs and preset is None:
            raise InvalidRequest("`inputs` are a preset's: name the preset too.", param="inputs")
        if preset is not None:
            ctx.caller.require_preset(preset)  # before its template is rendered or returned
        if system:
            check_prompt_chars([Message("system", system)], self._generation.max_prompt_chars, ["system"])
        name, route, _ = self._generation.resolve(model)
        if preset is not None:
            # The preset's system prompt, rendered once: the conversation keeps its wording.
            system = self._presets.system_prompt(preset, inputs or {})
        check_max_tokens(name, route, sampling.get("max_tokens"), param="sampling.max_tokens")
        if system:
            reserve = self._reserve(route, {**self._preset_defaults(preset), **sampling})
            fixed = self._counter(name, route).fixed(system, None)
            if fixed + reserve > route.context_window:
                raise InvalidRequest(
                    f"The system prompt is about {fixed} tokens: with room for a reply of {reserve} "
                    f"tokens it leaves no room for the conversation in model '{name}''s context "
                    f"window of {route.context_window} tokens.",
                    param="inputs" if preset else "system",
                    code="context_length_exceeded",
                )
        now = self._clocks.now()
        row = ConversationRow(
            id=f"conv_{uuid.uuid4().hex}",
            created_at=now,
            updated_at=now,
            model=name,
            system=system or None,
            preset=preset,
            inputs=dict(inputs) if inputs is not None else None,
            sampling=dict(sampling),
            meta=dict(metadata),
            turns=0,
            owner=ctx.owner,
            tools=[dict(t) for t in tools] if tools else None,
        )
        async with self._db.session() as session:
            session.add(row)
            await session.commit()
        return row

    async def history(
        self, ctx: RequestContext, conversation_id: str, *, limit: int, before: int | None
    ) -> History:
        async with self._db.session() as session:
            row = await store.get_conversation(session, conversation_id, owner=ctx.owner)
            if row is None or self._expired(row):
                raise _not_found(conversation_id)
            messages = await store.page_messages(session, conversation_id, limit=limit, before=before)
        has_more = bool(messages) and messages[0].seq > 1
        if not messages and before is not None:
            has_more = False
        return History(conversation=row, messages=messages, has_more=has_more)

    async def list(
        self, ctx: RequestContext, *, limit: int, after: str | None
    ) -> tuple[list[ConversationRow], bool]:
        async with self._db.session() as session:
            page = await store.list_conversations(session, limit=limit, after=after, owner=ctx.owner)
        if page is None:
            raise NotFound(
                f"No conversation found with id '{after}' to list after.",
                param="after",
                code="conversation_not_found",
            )
        rows, has_more = page
        return [row for row in rows if not self._expired(row)], has_more

    async def delete(self, ctx: RequestContext, conversation_id: str) -> None:
        async with self._db.session() as session:
            deleted = await store.delete_conversation(session, conversation_id, owner=ctx.owner)
            await session.commit()
        if not deleted:
            raise _not_found(conversation_id)

    # -- replies -----------------------------------------------------------------------------

    async def reply(
        self,
        ctx: RequestContext,
        conversation_id: str,
        content: str | None,
        overrides: Mapping[str, Any],
        *,
        tool_results: Sequence[tuple[str, str]] = (),
        tool_choice: ToolChoice = "auto",
        grounding: Grounding | None = None,
    ) -> Reply:
        """Answer the user's message (or the results of the tools the last reply called) and
        store the new turns with the reply (nothing is stored if it fails)."""
        async with self._turn(ctx, conversation_id) as row:
            asked, job = await self._planned(
                ctx, row, _NewTurn(content, tuple(tool_results), grounding), overrides, tool_choice
            )
            if grounding is not None and not grounding.answerable:
                outcome = no_answer(job)
            else:
                outcome = await self._generation.complete(job)
            choice = outcome.completion.choices[0]
            if grounding is not None:
                job.metadata["grounding"] = grounding.metadata(choice.text)
            turn = await self._store(
                row,
                asked,
                job,
                text=choice.text,
                finish_reason=choice.finish_reason,
                usage=outcome.completion.usage.as_dict(),
                tool_calls=choice.tool_calls,
            )
            return Reply(outcome=outcome, conversation_id=row.id, turn=turn)

    async def reply_stream(
        self,
        ctx: RequestContext,
        conversation_id: str,
        content: str | None,
        overrides: Mapping[str, Any],
        *,
        tool_results: Sequence[tuple[str, str]] = (),
        tool_choice: ToolChoice = "auto",
        grounding: Grounding | None = None,
    ) -> AsyncGenerator[ReplyChunk | Reply, None]:
        """Stream the reply; both turns are stored when it ends, before the final `Reply`.

        A failure stores nothing. A client that goes away after some text keeps what it was
        shown: both turns are stored, the reply marked `interrupted`."""
        async with self._turn(ctx, conversation_id) as row:
            asked, job = await self._planned(
                ctx, row, _NewTurn(content, tuple(tool_results), grounding), overrides, tool_choice
            )
            shown: list[str] = []
            outcome: Outcome | None = None
            try:
                answerable = grounding is None or grounding.answerable
                stream = self._generation.stream(job) if answerable else no_answer_stream(job)
                async with aclosing(stream) as items:
                    async for item in items:
                        if isinstance(item, Outcome):
                            outcome = item
                            continue
                        if item.text and item.index == 0:
                            shown.append(item.text)
                        yield ReplyChunk(job.id, item)
            except Exception:
                raise
            except BaseException:
                # Cancelled or closed: the client is gone. Keep what it saw, if anything.
                if shown:
                    with anyio.CancelScope(shield=True):
                        await self._store_interrupted(row, asked, job, "".join(shown))
                raise
            assert outcome is not None, "a finished stream ends with its outcome"
            choice = outcome.completion.choices[0]
            if grounding is not None:
                job.metadata["grounding"] = grounding.metadata(choice.text)
            turn = await self._store(
                row,
                asked,
                job,
                text=choice.text,
                finish_reason=choice.finish_reason,
                usage=outcome.completion.usage.as_dict(),
                tool_calls=choice.tool_calls,
            )
            yield Reply(outcome=outcome, conversation_id=row.id, turn=turn)

    # -- internals ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _turn(self, ctx: RequestContext, conversation_id: str) -> AsyncIterator[ConversationRow]:
        """Hold the conversation for one reply, without holding a database connection while the
        reply is generated: this replica's lock, then a claim on the row written and committed
        in a short transaction (other replicas wait for it), released in another at the end."""
        deadline = self._clocks.monotonic() + self._lock_timeout
        claim = uuid.uuid4().hex
        async with self._locks.hold(conversation_id, self._lock_timeout):
            row = await self._claim(conversation_id, ctx.owner, claim, deadline)
            try:
                yield row
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        async with self._db.session() as session:
                            await store.release_turn(session, conversation_id, claim)
                            await session.commit()
                    except Exception:  # the lease lapses on its own
                        log.warning("could not release a conversation's turn", exc_info=True)

    async def _claim(self, conversation_id: str, owner: str, claim: str, deadline: float) -> ConversationRow:
        """Claim the turn, waiting (with backoff) while another replica holds it; 409 when the
        wait runs out, 404 when there is no such conversation of `owner`'s."""
        pause = 0.02
        while True:
            async with self._db.session() as session:
                until = self._clocks.now() + timedelta(seconds=self._lease)
                claimed = await store.claim_turn(
                    session, conversation_id, owner=owner, claim_id=claim, until=until
                )
                await session.commit()
                row = await store.get_conversation(session, conversation_id, owner=owner)
            if row is None or self._expired(row):
                raise _not_found(conversation_id)
            if claimed:
                return row
            left = deadline - self._clocks.monotonic()
            if left <= 0:
                raise _busy(conversation_id, self._lock_timeout)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.25)

    async def _planned(
        self,
        ctx: RequestContext,
        row: ConversationRow,
        new: _NewTurn,
        overrides: Mapping[str, Any],
        tool_choice: ToolChoice,
    ) -> tuple[builtins.list[Message], Job]:
        """The reply's job (and the new turns), its history read in a short session of its own."""
        async with self._db.session() as session:
            return await self._plan(ctx, session, row, new, overrides, tool_choice)

    def _preset_defaults(self, preset: str | None) -> dict[str, Any]:
        return self._presets.get(preset).defaults if preset is not None else {}

    async def _preset_sampling(
        self, preset: str | None, explicit: Mapping[str, Any]
    ) -> SamplingChoice | None:
        """The preset's sampling for this reply (tuned when it tunes), or None without one. A
        preset since removed from the operator's file leaves its system prompt and nothing else."""
        if preset is None or self._presets.find(preset) is None:
            return None
        return await self._presets.choose_sampling(preset, explicit)

    def _reserve(self, route: ModelRoute, sampling: Mapping[str, Any]) -> int:
        """Tokens kept free for the reply: the requested max_tokens, else the model's default."""
        max_tokens = sampling.get("max_tokens")
        if max_tokens is None:
            return self._generation.default_max_tokens(route)
        return int(min(max_tokens, route.max_output_tokens))

    def _counter(self, name: str, route: ModelRoute) -> TokenCounter:
        _, _, provider = self._generation.resolve(name)
        return TokenCounter(provider, route.upstream_model or name)

    async def _plan(
        self,
        ctx: RequestContext,
        session: AsyncSession,
        row: ConversationRow,
        new: _NewTurn,
        overrides: Mapping[str, Any],
        tool_choice: ToolChoice,
    ) -> tuple[builtins.list[Message], Job]:
        """The job for the next reply: system prompt, the newest turns that fit, the message
        (or the tools' results); and the new turns to store with the reply."""
        name, route, _ = self._generation.resolve(row.model)
        tools = _tool_specs(row.tools)
        _check_tool_choice(tool_choice, tools)
        asked = await self._new_messages(session, row, new)
        sent = asked
        if new.grounding is not None and new.content is not None:
            grounded = grounded_prompt(
                new.grounding, new.content, max_chars=passage_chars(route.context_window)
            )
            sent = [Message("user", grounded)]
        content = "\n".join(m.content for m in sent)
        counter = self._counter(name, route)
        # The conversation's own settings count as the client's: they win over the preset's
        # defaults and keep tuning off for the fields they set, as a message's settings do.
        explicit = {**row.sampling, **overrides}
        choice = await self._preset_sampling(row.preset, explicit)
        defaults = choice.defaults if choice is not None else {}
        merged = {**defaults, **explicit}
        reserve = self._reserve(route, merged)
        window = route.context_window
        system = [Message("system", row.system)] if row.system else []
        user = Message("user", content)
        fixed = counter.fixed(row.system, content) + sum(counter.cost(m) for m in tool_messages(tools))
        if fixed + reserve > window:
            raise InvalidRequest(
                f"The message is about {counter.cost(user)} tokens: with the system prompt and room "
                f"for a reply of {reserve} tokens it does not fit model '{name}''s context window "
                f"of {window} tokens. Send a shorter message"
                + (" or a smaller max_tokens." if "max_tokens" in merged else "."),
                param="content",
                code="context_length_exceeded",
            )
        kept = await fit_history(
            counter,
            self._newest_turns(session, row.id),
            head=system,
            tail=sent,
            budget=window - reserve - fixed,
            room=window - reserve,
        )
        messages = [*system, *kept, *sent]
        job = self._generation.plan(
            ctx,
            GenerationSpec(
                endpoint="conversation",
                model=row.model,
                messages=messages,
                overrides=explicit,
                defaults=defaults,
                tools=tools,
                tool_choice=tool_choice if tools else "auto",
            ),
        )
        if choice is not None:
            choice.annotate(job)
            job.privacy = self._presets.get(choice.preset).spec.privacy
        job.metadata.update(
            {
                "conversation_id": row.id,
                "turns_in_context": len(kept),
                "turns_dropped": row.turns - len(kept),
            }
        )
        return asked, job

    async def _new_messages(
        self, session: AsyncSession, row: ConversationRow, new: _NewTurn
    ) -> builtins.list[Message]:
        """The turns this request adds: the user's message, or one result per call the last
        reply made (each call answered once, none left out)."""
        last = await store.newest_messages(session, row.id, before=None, limit=1)
        pending = (
            [c["id"] for c in (last[0].tool_calls or [])] if last and last[0].role == "assistant" else []
        )
        if new.content is not None:
            if pending:
                raise InvalidRequest(
                    f"The last reply called tools ({', '.join(pending)}): send their results as "
                    "`tool_results` before the next message.",
                    param="tool_results",
                    code="tool_results_expected",
                )
            return [Message("user", new.content)]
        answered: list[str] = []
        for i, (call_id, _) in enumerate(new.tool_results):
            if call_id not in pending or call_id in answered:
                raise InvalidRequest(
                    f"tool_results[{i}] answers the call '{call_id}', which the last reply did not "
                    "make" + (" (or which is answered twice)." if call_id in answered else "."),
                    param=f"tool_results[{i}].tool_call_id",
                    code="invalid_value",
                )
            answered.append(call_id)
        if missing := [c for c in pending if c not in answered]:
            raise InvalidRequest(
                f"Every call of the last reply needs its result; missing: {', '.join(missing)}.",
                param="tool_results",
                code="invalid_value",
            )
        names = {c["id"]: c["name"] for c in last[0].tool_calls or []}
        return [
            Message("tool", result, tool_call_id=call_id, name=names.get(call_id))
            for call_id, result in new.tool_results
        ]

    @staticmethod
    async def _newest_turns(session: AsyncSession, conversation_id: str) -> AsyncGenerator[Message, None]:
        """The conversation's turns, newest first, read a batch at a time."""
        before: int | None = None
        while True:
            batch = await store.newest_messages(session, conversation_id, before=before, limit=_HISTORY_BATCH)
            for message in batch:
                yield _message(message)
            if len(batch) < _HISTORY_BATCH:
                return
            before = batch[-1].seq

    async def _store(
        self,
        row: ConversationRow,
        asked: builtins.list[Message],
        job: Job,
        *,
        text: str,
        finish_reason: str | None,
        usage: dict[str, int] | None,
        interrupted: bool = False,
        tool_calls: tuple[ToolCall, ...] = (),
    ) -> int:
        """Append the user's message (or the tools' results) and the reply as the next turns,
        atomically, in a short transaction of its own (redacted when the privacy mode redacted the
        request: the placeholders are kept, not the values)."""
        conceal = job.conceal or (lambda text: text)
        questions = [
            MessageRow(
                role=m.role, content=conceal(m.content), interrupted=False, tool_call_id=m.tool_call_id
            )
            for m in asked
        ]
        answer = MessageRow(
            role="assistant",
            content=conceal(text),
            generation_id=job.id,
            finish_reason=finish_reason,
            interrupted=interrupted,
            usage=usage,
            tool_calls=[{"id": c.id, "name": c.name, "arguments": conceal(c.arguments)} for c in tool_calls]
            or None,
        )
        conversation_id, row_owner = row.id, row.owner
        async with self._db.session() as session:
            if not await store.append_turns(session, row, [*questions, answer]):
                await session.rollback()
                if await store.get_conversation(session, conversation_id, owner=row_owner) is None:
                    raise NotFound(
                        f"The conversation '{conversation_id}' was deleted while the reply was generated.",
                        param="conversation_id",
                        code="conversation_not_found",
                    )
                raise Conflict(
                    f"Another message was added to conversation '{conversation_id}' while this reply "
                    "was generated; it was not stored. Send the message again.",
                    code="conversation_changed",
                )
            await session.commit()
        return answer.seq

    async def _store_interrupted(
        self, row: ConversationRow, asked: builtins.list[Message], job: Job, shown: str
    ) -> None:
        try:
            await self._store(row, asked, job, text=shown, finish_reason=None, usage=None, interrupted=True)
        except Exception:
            # Nobody is left to tell; the turn is simply not kept.
            log.warning("could not store an interrupted reply", exc_info=True)


@dataclass(frozen=True, slots=True)
class _NewTurn:
    """What a request adds to the conversation: the user's message, or the tools' results."""

    content: str | None
    tool_results: tuple[tuple[str, str], ...] = ()
    grounding: Grounding | None = None
    """Passages to answer `content` from: sent quoted before it, stored without them."""


def _message(row: MessageRow) -> Message:
    """A stored turn as the provider sees it."""
    return Message(
        row.role,  # type: ignore[arg-type]
        row.content,
        tool_calls=tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in row.tool_calls or ()),
        tool_call_id=row.tool_call_id,
    )


def _tool_specs(tools: list[dict[str, Any]] | None) -> tuple[ToolSpec, ...]:
    return tuple(
        ToolSpec(
            t["function"]["name"],
            t["function"].get("description"),
            t["function"].get("parameters") or {"type": "object", "properties": {}},
        )
        for t in tools or ()
    )


def _check_tool_choice(choice: ToolChoice, tools: tuple[ToolSpec, ...]) -> None:
    if choice == "auto":
        return
    if not tools:
        raise InvalidRequest(
            "tool_choice needs tools: this conversation was created without any.",
            param="tool_choice",
            code="invalid_value",
        )
    if isinstance(choice, ToolChoiceNamed) and choice.name not in {t.name for t in tools}:
        raise InvalidRequest(
            f"tool_choice names the function '{choice.name}', which is not among the conversation's tools.",
            param="tool_choice.function.name",
            code="invalid_value",
        )
