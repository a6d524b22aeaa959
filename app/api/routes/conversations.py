"""`/v1/conversations`: persistent conversations whose replies keep the newest turns in context."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from app.api import grounded
from app.api.admission import metered_per_job
from app.api.deps import ConversationsDep, CtxDep, SettingsDep, VectorStoresDep
from app.api.openapi import stream_responses
from app.api.render.conversations import (
    conversation_body,
    conversation_list,
    deleted_body,
    history_body,
    reply_body,
    reply_stream,
)
from app.api.streaming import sse_response, until_disconnected
from app.schemas.conversations import (
    Conversation,
    ConversationCreate,
    ConversationDeleted,
    ConversationList,
    ConversationReply,
    ConversationWithMessages,
    MessageCreate,
)
from app.schemas.generate import GenerateChunk

router = APIRouter(tags=["conversations"])

ConversationId = Annotated[str, Path(max_length=64, description="The conversation's id.")]


@router.post("/v1/conversations", response_model=Conversation)
async def create_conversation(
    body: ConversationCreate, ctx: CtxDep, service: ConversationsDep
) -> dict[str, object]:
    """Start a conversation: its model, its system prompt (or a preset and its inputs), default
    sampling and your metadata."""
    row = await service.create(
        ctx,
        model=body.model,
        system=body.system,
        sampling=body.sampling.sampling_overrides() if body.sampling else {},
        metadata=body.metadata,
        preset=body.preset,
        inputs=body.inputs,
        tools=[t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
    )
    return conversation_body(row, ctx.caller)


@router.get("/v1/conversations", response_model=ConversationList)
async def list_conversations(
    ctx: CtxDep,
    service: ConversationsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Conversations per page.")] = 20,
    after: Annotated[
        str | None, Query(max_length=64, description="A page's `last_id`: list the ones after it.")
    ] = None,
) -> dict[str, object]:
    """Conversations, newest first (by creation), `limit` at a time; page on with `after`."""
    rows, has_more = await service.list(ctx, limit=limit, after=after)
    return conversation_list(rows, has_more, ctx.caller)


@router.get("/v1/conversations/{conversation_id}", response_model=ConversationWithMessages)
async def get_conversation(
    conversation_id: ConversationId,
    ctx: CtxDep,
    service: ConversationsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Messages per page.")] = 50,
    before: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="A message's `seq`: return the messages before it."),
    ] = None,
) -> dict[str, object]:
    """The conversation's settings and its newest `limit` messages, oldest first; older pages
    with `before` set to the first message's `seq`."""
    return history_body(await service.history(ctx, conversation_id, limit=limit, before=before), ctx.caller)


@router.delete("/v1/conversations/{conversation_id}", response_model=ConversationDeleted)
async def delete_conversation(
    conversation_id: ConversationId, ctx: CtxDep, service: ConversationsDep
) -> dict[str, object]:
    """Delete the conversation and all its messages."""
    await service.delete(ctx, conversation_id)
    return deleted_body(conversation_id)


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    response_model=ConversationReply,
    responses=stream_responses(GenerateChunk, ConversationReply),
)
@metered_per_job
async def send_message(
    conversation_id: ConversationId,
    body: MessageCreate,
    ctx: CtxDep,
    service: ConversationsDep,
    request: Request,
    stores: VectorStoresDep,
    settings: SettingsDep,
) -> Response | dict[str, object]:
    """Send the user's message and get the assistant's reply, with the same metadata as
    `POST /v1/generate` (`metadata.turns_dropped` counts earlier turns left out of the context).
    Both turns are stored once the reply is complete; a failed reply stores nothing.

    With `vector_store_ids`, the message is answered from the stores' passages (sent quoted
    before it, stored without them) with `metadata.grounding.citations`, as on `/v1/generate`."""
    grounding = None
    if body.vector_store_ids is not None:
        where = (ctx, request, stores, settings)
        grounding = await grounded.search(body, body.content, param="content", where=where)
    overrides = body.sampling_overrides()
    results = [(r.tool_call_id, r.content) for r in body.tool_results or ()]
    choice = body.tool_choice_value()
    if body.stream:
        return await sse_response(
            service.reply_stream(
                ctx,
                conversation_id,
                body.content,
                overrides,
                tool_results=results,
                tool_choice=choice,
                grounding=grounding,
            ),
            reply_stream,
            request,
        )
    reply = await until_disconnected(
        request,
        service.reply(
            ctx,
            conversation_id,
            body.content,
            overrides,
            tool_results=results,
            tool_choice=choice,
            grounding=grounding,
        ),
    )
    return reply_body(reply)
