"""The Responses API: a generation whose input and output are items, stored (by default) so that
a later request can continue from it with `previous_response_id`.

A response belongs to the client key that created it; another key sees no such response. The
history behind `previous_response_id` is the chain of stored responses walked back from it,
fitted into the model's context window as conversations are (`app/services/generation/history.py`).
Each response is its own row, so two requests may continue from the same response (a branch),
and any replica can continue any chain: there is nothing to lock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidRequest, NotFound, NotInstalled
from app.providers.base import Chunk, Message, ToolCall, Usage
from app.schemas.responses import (
    CreateResponseRequest,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    MessageItem,
)
from app.services.apps.grounding import cited, passages_block
from app.services.apps.retention import EndUsers, Retention
from app.services.apps.vector_stores import SearchSpec, VectorStoreService
from app.services.generation.context import RequestContext
from app.services.generation.history import TokenCounter, fit_history, whole_history
from app.services.generation.pipeline import GenerationService, Job, Outcome
from app.services.generation.spec import GenerationSpec
from app.services.retrieval.index import Hit
from app.storage import responses as store
from app.storage.db import Database
from app.storage.responses import ResponseRow

Status = Literal["in_progress", "completed", "incomplete"]
_ROLES = {"developer": "system"}
_CHAIN_LIMIT = 10_000
"""Responses walked back at most, whatever fits (a guard against a cycle of ids)."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as the API reports it (in progress while it streams)."""

    id: str
    created_at: int
    model: str
    status: Status
    previous_response_id: str | None
    params: dict[str, Any]
    """The request's settings as served: instructions, effective temperature and top_p,
    max_output_tokens, tools, tool_choice, parallel_tool_calls, text, truncation, metadata,
    store, user."""
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """This service's own facts: provider, effective sampling, timings, metadata."""

    @property
    def incomplete_reason(self) -> str | None:
        return "max_output_tokens" if self.status == "incomplete" else None


@dataclass(frozen=True, slots=True)
class FileSearch:
    """One file_search call: its queries, what it found, and whether every store was ready."""

    id: str
    queries: list[str]
    hits: list[Hit]
    status: Literal["completed", "incomplete"]
    """`incomplete` when a store still had files ingesting: the answer used what was ready."""
    include_results: bool

    def item(self) -> dict[str, Any]:
        results = (
            [
                {
                    "file_id": h.file_id,
                    "filename": h.filename,
                    "score": h.score,
                    "text": h.text,
                    "attributes": h.attributes,
                }
                for h in self.hits
            ]
            if self.include_results
            else None
        )
        return {
            "id": self.id,
            "type": "file_search_call",
            "status": self.status,
            "queries": self.queries,
            "results": results,
        }


def _last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            return message.content
    raise InvalidRequest("file_search needs a user message to search for.", param="input")


def citations(text: str, hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """`file_citation` annotations for the passages the answer drew on: at the `[n]` that names
    a passage, else at the end of the text."""
    annotations = []
    for position in cited(text, hits):
        hit = hits[position]
        marker = text.find(f"[{position + 1}]")
        annotations.append(
            {
                "type": "file_citation",
                "file_id": hit.file_id,
                "filename": hit.filename,
                "index": marker if marker >= 0 else len(text),
            }
        )
    return annotations


@dataclass(slots=True)
class Draft:
    """A planned response: its job, its input items (with ids) and the ids its output will have."""

    job: Job
    owner: str
    created_at: int
    previous_response_id: str | None
    params: dict[str, Any]
    input_items: list[dict[str, Any]]
    message_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    search: FileSearch | None = None
    """What the file_search tool found, before the model answered."""

    @property
    def id(self) -> str:
        return self.job.id

    def call_item_id(self, index: int) -> str:
        """The output item id of the answer's function call number `index`."""
        return f"fc_{self.message_id.removeprefix('msg_')}_{index}"

    def in_progress(self) -> StoredResponse:
        return StoredResponse(
            id=self.id,
            created_at=self.created_at,
            # Read late: a fallback model may have taken over.
            model=self.job.model,
            status="in_progress",
            previous_response_id=self.previous_response_id,
            params=self.params,
        )


@dataclass(frozen=True, slots=True)
class InputItemsPage:
    items: list[dict[str, Any]]
    has_more: bool


def _not_found(response_id: str, param: str = "response_id") -> NotFound:
    return NotFound(f"No response found with id '{response_id}'.", param=param, code="response_not_found")


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def stored_item(item: MessageItem | FunctionCallItem | FunctionCallOutputItem) -> dict[str, Any]:
    """An input item as it is kept and listed: with an id and a status, content as parts."""
    if isinstance(item, MessageItem):
        kind = "output_text" if item.role == "assistant" else "input_text"
        parts = (
            [{"type": kind, "text": item.content}]
            if isinstance(item.content, str)
            else [part.model_dump(exclude_none=True) for part in item.content]
        )
        return {
            "id": item.id or _item_id("msg"),
            "type": "message",
            "role": item.role,
            "content": parts,
            "status": item.status or "completed",
        }
    data = item.model_dump(exclude_none=True)
    data["id"] = item.id or _item_id("fc" if isinstance(item, FunctionCallItem) else "fco")
    data["status"] = item.status or "completed"
    return data


def item_messages(items: Sequence[dict[str, Any]]) -> list[Message]:
    """What stored items say to the model, as provider messages: function calls join the
    assistant turn they follow (several calls in a row are one turn's parallel calls), and a
    call's output is a `tool` turn."""
    out: list[Message] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            text = "".join(part.get("text", "") for part in item.get("content", ()))
            out.append(Message(_ROLES.get(item["role"], item["role"]), text))
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            if out and out[-1].role == "assistant" and not out[-1].tool_call_id:
                out[-1] = replace(out[-1], tool_calls=(*out[-1].tool_calls, call))
            else:
                out.append(Message("assistant", "", tool_calls=(call,)))
        elif kind == "function_call_output":
            out.append(Message("tool", item["output"], tool_call_id=item["call_id"]))
    return out


def _check_calls(items: Sequence[dict[str, Any]], history_calls: set[str]) -> None:
    """A function call's output must answer a call made before it (in this input or the chain)."""
    calls = set(history_calls)
    for position, item in enumerate(items):
        if item["type"] == "function_call":
            calls.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in calls:
            raise InvalidRequest(
                f"No function call with call_id '{item['call_id']}' precedes this output.",
                param=f"input[{position}].call_id",
                code="invalid_value",
            )


def _row_chain_calls(row: ResponseRow) -> set[str]:
    return {
        item["call_id"]
        for item in [*row.input_items, *row.output]
        if item.get("type") == "function_call" and "call_id" in item
    }


def _from_row(row: ResponseRow) -> StoredResponse:
    return StoredResponse(
        id=row.id,
        created_at=int(row.created_at.timestamp()),
        model=row.model,
        status=row.status,  # type: ignore[arg-type]
        previous_response_id=row.previous_response_id,
        params=row.params,
        output=row.output,
        usage=Usage(row.usage["input_tokens"], row.usage["output_tokens"]),
        details=row.details,
    )


class ResponseService:
    """Creates, streams, retrieves and deletes stored responses."""

    def __init__(
        self,
        db: Database,
        generation: GenerationService,
        vector_stores: VectorStoreService | None = None,
        *,
        retention: Retention | None = None,
        end_users: EndUsers | None = None,
    ) -> None:
        self._db = db
        self._end_users = end_users
        self._generation = generation
        self._stores = vector_stores
        self._retention = retention

    async def _fetch(self, session: AsyncSession, response_id: str, owner: str) -> ResponseRow | None:
        """`owner`'s response, or None: also once it has expired (before any sweep deletes it)."""
        row = await store.get_response(session, response_id, owner=owner)
        retention = self._retention
        if row is not None and retention is not None and retention.expired("responses", row.created_at):
            return None
        return row

    async def _file_search(
        self, ctx: RequestContext, request: CreateResponseRequest, messages: Sequence[Message]
    ) -> FileSearch | None:
        tool = request.file_search
        if tool is None:
            return None
        if self._stores is None:
            raise NotInstalled("file_search needs vector stores, which this service was built without.")
        query = _last_user_text(messages)
        ranking = tool.ranking_options
        hybrid = ranking.hybrid_search if ranking else None
        spec = SearchSpec(
            query=query,
            max_num_results=tool.max_num_results,
            filters=tool.filters.model_dump() if tool.filters is not None else None,
            ranker=ranking.ranker if ranking else "auto",
            score_threshold=ranking.score_threshold if ranking else 0.0,
            embedding_weight=hybrid.embedding_weight if hybrid else None,
            text_weight=hybrid.text_weight if hybrid else None,
        )
        hits = await self._stores.search(ctx, tool.vector_store_ids, spec)
        ready = await self._stores.readiness(ctx.owner, tool.vector_store_ids)
        return FileSearch(
            id=f"fs_{uuid.uuid4().hex}",
            queries=[query],
            hits=hits,
            status="incomplete" if "in_progress" in ready.values() else "completed",
            include_results="file_search_call.results" in (request.include or ()),
        )

    # -- creating ------------------------------------------------------------------------------

    async def prepare(self, ctx: RequestContext, request: CreateResponseRequest) -> Draft:
        """Plan the response: its history (when it continues one), its input, its settings.
        The response belongs to the caller's key."""
        owner = ctx.caller.key_id
        items = [stored_item(item) for item in request.items]
        name, route, provider = self._generation.resolve(request.model)
        system = [Message("system", request.instructions)] if request.instructions else []
        tail = item_messages(items)
        overrides: dict[str, Any] = {}
        if request.temperature is not None:
            overrides["temperature"] = request.temperature
        if request.top_p is not None:
            overrides["top_p"] = request.top_p
        if request.max_output_tokens is not None:
            overrides["max_tokens"] = request.max_output_tokens
        metadata: dict[str, Any] = {}
        messages = [*system, *tail]
        if request.previous_response_id is None:
            _check_calls(items, set())
        else:
            async with self._db.session() as session:
                previous = await self._fetch(session, request.previous_response_id, owner)
                if previous is None:
                    raise _not_found(request.previous_response_id, "previous_response_id")
                _check_calls(items, _row_chain_calls(previous))
                counter = TokenCounter(provider, route.upstream_model or name)
                reserve = (
                    min(request.max_output_tokens, route.max_output_tokens)
                    if request.max_output_tokens is not None
                    else self._generation.default_max_tokens(route)
                )
                window = route.context_window
                fixed = counter.total([*system, *tail])
                if fixed + reserve > window:
                    raise InvalidRequest(
                        f"The input is about {fixed} tokens: with room for a reply of {reserve} tokens "
                        f"it does not fit model '{name}''s context window of {window} tokens.",
                        param="input",
                        code="context_length_exceeded",
                    )
                if request.truncation == "disabled":
                    kept = await whole_history(
                        counter,
                        self._chain(session, previous, owner),
                        budget=window - reserve - fixed,
                    )
                    if kept is None or counter.total([*system, *kept, *tail]) > window - reserve:
                        raise InvalidRequest(
                            f"The conversation of '{request.previous_response_id}' with this input "
                            f"does not fit model '{name}''s context window of {window} tokens with room "
                            f"for a reply of {reserve} tokens, and truncation is 'disabled'; "
                            "with 'auto' the oldest exchanges are left out.",
                            param="input",
                            code="context_length_exceeded",
                        )
                else:
                    kept = await fit_history(
                        counter,
                        self._chain(session, previous, owner),
                        head=system,
                        tail=tail,
                        budget=window - reserve - fixed,
                        room=window - reserve,
                    )
            messages = [*system, *kept, *tail]
            metadata = {"turns_in_context": len(kept)}
        search = await self._file_search(ctx, request, messages)
        if search is not None:
            # The passages go in a user turn before the question, as quoted data, fitted to
            # what the context window leaves (about three characters a token).
            counter = TokenCounter(provider, route.upstream_model or name)
            room = route.context_window - counter.total(messages) - self._generation.default_max_tokens(route)
            block = passages_block(search.hits, max_chars=max(600, min(12_000, room * 3)))
            if messages[-1].role == "user":
                messages = [*messages[:-1], Message("user", block), messages[-1]]
            else:  # after a tool's result: the passages follow it
                messages = [*messages, Message("user", block)]
            metadata["file_search"] = {"passages": len(search.hits), "status": search.status}
        job = self._generation.plan(
            ctx,
            GenerationSpec(
                endpoint="responses",
                model=request.model,
                messages=messages,
                overrides=overrides,
                user=request.user,
                safety_identifier=request.safety_identifier,
                id_prefix="resp",
                text_param="input",
                tools=request.tool_specs(),
                tool_choice=request.tool_choice_value(),
                parallel_tool_calls=request.parallel_tool_calls is not False,
                extra={"response_format": fmt} if (fmt := request.response_format()) is not None else None,
            ),
        )
        job.metadata.update(metadata)
        params = {
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "temperature": job.request.sampling.temperature,
            "top_p": job.request.sampling.top_p,
            "tools": [
                {
                    "type": "function",
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                    "strict": tool.strict,
                }
                if isinstance(tool, FunctionTool)
                else tool.model_dump(exclude_none=True)
                for tool in request.tools or ()
            ],
            "tool_choice": (
                request.tool_choice.model_dump()
                if request.tool_choice is not None and not isinstance(request.tool_choice, str)
                else request.tool_choice or "auto"
            ),
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "text": {"format": request.text_format()},
            "truncation": request.truncation or "auto",
            "metadata": dict(request.metadata or {}),
            "store": request.store is not False,
            "user": request.user,
        }
        return Draft(
            job=job,
            owner=owner,
            created_at=job.created,
            previous_response_id=request.previous_response_id,
            params=params,
            input_items=items,
            search=search,
        )

    async def complete(self, draft: Draft) -> StoredResponse:
        outcome = await self._generation.complete(draft.job)
        return await self._finish(draft, outcome)

    async def stream(self, draft: Draft) -> AsyncGenerator[Chunk | StoredResponse, None]:
        """The text chunks of the answer, then the finished (and stored) response."""
        async with aclosing(self._generation.stream(draft.job)) as items:
            async for item in items:
                if isinstance(item, Outcome):
                    yield await self._finish(draft, item)
                elif item.usage is None:
                    yield item

    async def _finish(self, draft: Draft, outcome: Outcome) -> StoredResponse:
        choice = outcome.completion.choices[0]
        status: Status = "incomplete" if choice.finish_reason == "length" else "completed"
        output: list[dict[str, Any]] = [draft.search.item()] if draft.search is not None else []
        annotations = citations(choice.text, draft.search.hits) if draft.search is not None else []
        if choice.text or not choice.tool_calls:
            output.append(
                {
                    "id": draft.message_id,
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": [
                        {
                            "type": "output_text",
                            "text": choice.text,
                            "annotations": annotations,
                            "logprobs": [],
                        }
                    ],
                }
            )
        output.extend(
            {
                "id": draft.call_item_id(position),
                "type": "function_call",
                "status": "completed",
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments,
            }
            for position, call in enumerate(choice.tool_calls)
        )
        response = replace(
            draft.in_progress(),
            status=status,
            output=output,
            usage=outcome.completion.usage,
            details={
                "provider": draft.job.provider.name,
                "sampling": outcome.sampling(),
                "timings": outcome.timings(),
                "metadata": draft.job.metadata,
            },
        )
        if draft.params["store"]:
            await self._store(draft, response)
        return response

    async def _store(self, draft: Draft, response: StoredResponse) -> None:
        usage = response.usage or Usage()
        row = ResponseRow(
            id=response.id,
            owner=draft.owner,
            user_hash=self._end_users.key(draft.job.end_user) if self._end_users else None,
            safety_hash=self._end_users.key(draft.job.safety_identifier) if self._end_users else None,
            created_at=datetime.fromtimestamp(response.created_at, UTC),
            model=response.model,
            status=response.status,
            previous_response_id=response.previous_response_id,
            params=response.params,
            input_items=draft.input_items,
            output=response.output,
            usage={"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
            details=response.details,
        )
        async with self._db.session() as session:
            await store.add_response(session, row)
            await session.commit()

    async def _chain(
        self, session: AsyncSession, newest: ResponseRow, owner: str
    ) -> AsyncGenerator[Message, None]:
        """The chain's messages, newest first: each response's output, then its input."""
        row: ResponseRow | None = newest
        for _ in range(_CHAIN_LIMIT):
            if row is None:
                return
            for message in reversed(item_messages([*row.input_items, *row.output])):
                yield message
            if row.previous_response_id is None:
                return
            row = await self._fetch(session, row.previous_response_id, owner)

    # -- reading -------------------------------------------------------------------------------

    async def get(self, owner: str, response_id: str) -> StoredResponse:
        async with self._db.session() as session:
            row = await self._fetch(session, response_id, owner)
        if row is None:
            raise _not_found(response_id)
        return _from_row(row)

    async def delete(self, owner: str, response_id: str) -> None:
        async with self._db.session() as session:
            deleted = await store.delete_response(session, response_id, owner=owner)
            await session.commit()
        if not deleted:
            raise _not_found(response_id)

    async def input_items(
        self,
        owner: str,
        response_id: str,
        *,
        limit: int,
        order: Literal["asc", "desc"],
        after: str | None,
    ) -> InputItemsPage:
        async with self._db.session() as session:
            row = await self._fetch(session, response_id, owner)
        if row is None:
            raise _not_found(response_id)
        items = list(row.input_items if order == "asc" else reversed(row.input_items))
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise NotFound(
                    f"No input item with id '{after}' in response '{response_id}'.",
                    param="after",
                    code="item_not_found",
                )
            items = items[ids.index(after) + 1 :]
        return InputItemsPage(items=items[:limit], has_more=len(items) > limit)
