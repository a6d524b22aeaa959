"""`/v1/conversations`: persistent conversations whose replies keep the newest turns in context."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from app.api.deps import ConversationsDep
from app.api.routes.generate import generate_body
from app.api.streaming import frame, sse_response, until_disconnected
from app.schemas.conversations import (
    Conversation,
    ConversationCreate,
    ConversationDeleted,
    ConversationList,
    ConversationReply,
    ConversationWithMessages,
    MessageCreate,
    MessageOut,
)
from app.services.conversations import Reply, ReplyChunk
from app.storage.conversations import ConversationRow, MessageRow

router = APIRouter(tags=["conversations"])

ConversationId = Annotated[str, Path(max_length=64, description="The conversation's id.")]


def _unix(moment: datetime) -> int:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def conversation_body(row: ConversationRow) -> dict[str, object]:
    return {
        "id": row.id,
        "object": "conversation",
        "created_at": _unix(row.created_at),
        "updated_at": _unix(row.updated_at),
        "model": row.model,
        "system": row.system,
        "preset": row.preset,
        "inputs": row.inputs,
        "sampling": row.sampling,
        "metadata": row.meta,
        "message_count": row.turns,
    }


def message_body(row: MessageRow) -> MessageOut:
    return MessageOut(
        seq=row.seq,
        role=row.role,
        content=row.content,
        created_at=_unix(row.created_at),
        generation_id=row.generation_id,
        finish_reason=row.finish_reason,
        interrupted=row.interrupted,
        usage=row.usage,
    )


def reply_body(reply: Reply) -> dict[str, object]:
    return {**generate_body(reply.outcome), "conversation_id": reply.conversation_id, "turn": reply.turn}


def render_reply(item: ReplyChunk | Reply) -> list[bytes]:
    """The same frames as `POST /v1/generate`: text deltas, then the full metadata."""
    if isinstance(item, Reply):
        return [frame(reply_body(item))]
    chunk = item.chunk
    if not chunk.text:
        return []
    return [
        frame(
            {"id": item.generation_id, "object": "generation.chunk", "index": chunk.index, "text": chunk.text}
        )
    ]


@router.post("/v1/conversations", response_model=Conversation)
async def create_conversation(body: ConversationCreate, service: ConversationsDep) -> dict[str, object]:
    """Start a conversation: its model, its system prompt (or a preset and its inputs), default
    sampling and your metadata."""
    row = await service.create(
        model=body.model,
        system=body.system,
        sampling=body.sampling.sampling_overrides() if body.sampling else {},
        metadata=body.metadata,
        preset=body.preset,
        inputs=body.inputs,
    )
    return conversation_body(row)


@router.get("/v1/conversations", response_model=ConversationList)
async def list_conversations(
    service: ConversationsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Conversations per page.")] = 20,
    after: Annotated[
        str | None, Query(max_length=64, description="A page's `last_id`: list the ones after it.")
    ] = None,
) -> dict[str, object]:
    """Conversations, newest first (by creation), `limit` at a time; page on with `after`."""
    rows, has_more = await service.list(limit=limit, after=after)
    return {
        "object": "list",
        "data": [conversation_body(row) for row in rows],
        "first_id": rows[0].id if rows else None,
        "last_id": rows[-1].id if rows else None,
        "has_more": has_more,
    }


@router.get("/v1/conversations/{conversation_id}", response_model=ConversationWithMessages)
async def get_conversation(
    conversation_id: ConversationId,
    service: ConversationsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Messages per page.")] = 50,
    before: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="A message's `seq`: return the messages before it."),
    ] = None,
) -> dict[str, object]:
    """The conversation's settings and its newest `limit` messages, oldest first; older pages
    with `before` set to the first message's `seq`."""
    page = await service.history(conversation_id, limit=limit, before=before)
    return {
        **conversation_body(page.conversation),
        "messages": [message_body(m) for m in page.messages],
        "has_more": page.has_more,
    }


@router.delete("/v1/conversations/{conversation_id}", response_model=ConversationDeleted)
async def delete_conversation(
    conversation_id: ConversationId, service: ConversationsDep
) -> dict[str, object]:
    """Delete the conversation and all its messages."""
    await service.delete(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    response_model=ConversationReply,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}},
)
async def send_message(
    conversation_id: ConversationId, body: MessageCreate, service: ConversationsDep, request: Request
) -> Response | dict[str, object]:
    """Send the user's message and get the assistant's reply, with the same metadata as
    `POST /v1/generate` (`metadata.turns_dropped` counts earlier turns left out of the context).
    Both turns are stored once the reply is complete; a failed reply stores nothing."""
    overrides = body.sampling_overrides()
    if body.stream:
        return await sse_response(
            service.reply_stream(conversation_id, body.content, overrides), render_reply, request
        )
    reply = await until_disconnected(request, service.reply(conversation_id, body.content, overrides))
    return reply_body(reply)
