"""Conversations' bodies; replies answer in `/v1/generate`'s shape plus the turn they became."""

from __future__ import annotations

from app.api.render.generate import generate_body, text_frame
from app.api.streaming import frame
from app.clock import unix
from app.schemas.chat import FunctionCallOut, ToolCallOut
from app.schemas.conversations import MessageOut
from app.services.apps.conversations import History, Reply, ReplyChunk
from app.services.generation.caller import Client
from app.storage.conversations import ConversationRow, MessageRow


def conversation_body(row: ConversationRow, caller: Client) -> dict[str, object]:
    """A preset's rendered system prompt is the operator's template: shown only to a key that
    may use that preset (a key restricted after creating the conversation sees `null`)."""
    shows_system = row.preset is None or caller.may_use_preset(row.preset)
    return {
        "id": row.id,
        "object": "conversation",
        "created_at": unix(row.created_at),
        "updated_at": unix(row.updated_at),
        "model": row.model,
        "system": row.system if shows_system else None,
        "preset": row.preset,
        "inputs": row.inputs,
        "sampling": row.sampling,
        "metadata": row.meta,
        "message_count": row.turns,
        "tools": row.tools,
    }


def conversation_list(rows: list[ConversationRow], has_more: bool, caller: Client) -> dict[str, object]:
    return {
        "object": "list",
        "data": [conversation_body(row, caller) for row in rows],
        "first_id": rows[0].id if rows else None,
        "last_id": rows[-1].id if rows else None,
        "has_more": has_more,
    }


def message_body(row: MessageRow) -> MessageOut:
    return MessageOut(
        seq=row.seq,
        role=row.role,
        content=row.content,
        created_at=unix(row.created_at),
        generation_id=row.generation_id,
        finish_reason=row.finish_reason,
        interrupted=row.interrupted,
        usage=row.usage,
        tool_calls=[
            ToolCallOut(id=c["id"], function=FunctionCallOut(name=c["name"], arguments=c["arguments"]))
            for c in row.tool_calls
        ]
        if row.tool_calls
        else None,
        tool_call_id=row.tool_call_id,
    )


def history_body(page: History, caller: Client) -> dict[str, object]:
    return {
        **conversation_body(page.conversation, caller),
        "messages": [message_body(m) for m in page.messages],
        "has_more": page.has_more,
    }


def deleted_body(conversation_id: str) -> dict[str, object]:
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def reply_body(reply: Reply) -> dict[str, object]:
    return {**generate_body(reply.outcome), "conversation_id": reply.conversation_id, "turn": reply.turn}


def reply_stream(item: ReplyChunk | Reply) -> list[bytes]:
    """The same frames as `POST /v1/generate`: text deltas, then the full metadata."""
    if isinstance(item, Reply):
        return [frame(reply_body(item))]
    return text_frame(item.generation_id, item.chunk)
