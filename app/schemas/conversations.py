"""Wire models of `/v1/conversations`: persistent multi-turn conversations."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from app.errors import InvalidRequest
from app.providers.base import FinishReason, ToolChoice, ToolChoiceNamed
from app.schemas.chat import NamedToolChoice, Tool, ToolCallOut
from app.schemas.common import GroundingFields, JsonNumber, SamplingFields
from app.schemas.generate import MAX_PROMPT_CHARS, GenerateResponse

MetadataKey = Annotated[str, Field(min_length=1, max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]


class ConversationSampling(SamplingFields):
    """Sampling defaults for every reply of a conversation (each message may still override
    them). A conversation has one reply per turn, so `n` is always 1."""

    n: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=1)
    """Always 1: a conversation keeps one reply per turn."""


class ConversationCreate(BaseModel):
    """A new conversation: who the assistant is (a preset or a system prompt) and its model."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    """A model from `GET /v1/models`; the default model when omitted. Fixed for the conversation."""
    system: str | None = Field(default=None)
    """Instructions kept at the start of the context in every turn (or name a preset)."""
    preset: str | None = Field(default=None, max_length=100)
    """A preset from `GET /v1/presets` (e.g. `customer_service`): its system prompt, rendered
    from `inputs`, and its default (or feedback-tuned) sampling for every reply."""
    inputs: dict[str, Any] | None = None
    """The preset's inputs its system prompt uses (see its `input_schema`)."""
    sampling: ConversationSampling | None = None
    """Default sampling settings of every reply (a message's own settings win)."""
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=16)
    """Up to 16 key/value pairs of the caller's own, returned as given."""
    tools: list[Tool] | None = Field(default=None, min_length=1, max_length=128)
    """Functions the assistant may call in this conversation (OpenAI's chat `tools` shape).
    A reply that calls them is stored with its `tool_calls`; post their results as the next
    message (`tool_results`) to get the answer."""

    @field_validator("tools")
    @classmethod
    def _distinct_names(cls, tools: list[Tool] | None) -> list[Tool] | None:
        names = [t.function.name for t in tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be distinct")
        return tools


class ToolResult(BaseModel):
    """The result of one call the assistant's last reply made."""

    model_config = ConfigDict(extra="forbid")

    tool_call_id: str = Field(min_length=1, max_length=256)
    """The `id` of the call this answers."""
    content: str = Field(max_length=MAX_PROMPT_CHARS)
    """What the tool returned (usually JSON text)."""


class MessageCreate(ConversationSampling, GroundingFields):
    """The user's next message — or the results of the tools the last reply called — and
    optional sampling settings for this reply only."""

    content: str | None = Field(default=None, min_length=1)
    """What the user says."""
    tool_results: list[ToolResult] | None = Field(default=None, min_length=1, max_length=128)
    """Instead of `content`: the results of the calls the last reply made, one per call."""
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    """How this reply may use the conversation's tools (`auto` by default)."""
    stream: StrictBool = False
    """Answer with server-sent events, exactly as `POST /v1/generate` streams."""

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the message must not be blank")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> MessageCreate:
        if (self.content is None) == (self.tool_results is None):
            raise InvalidRequest(
                "Send either content (the user's message) or tool_results (the results of the calls "
                "the last reply made), not both and not neither.",
                param="tool_results" if self.tool_results is not None else "content",
                code="invalid_value",
            )
        return self

    def tool_choice_value(self) -> ToolChoice:
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            return ToolChoiceNamed(choice.function.name)
        return choice or "auto"


class MessageOut(BaseModel):
    """One stored turn."""

    seq: int
    """The turn's number in the conversation, from 1."""
    role: Literal["user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCallOut] | None = None
    """An assistant turn's calls of the conversation's tools."""
    tool_call_id: str | None = None
    """A `tool` turn: the call whose result `content` is."""
    created_at: int
    """Unix time (seconds) the turn was stored."""
    generation_id: str | None = None
    """For replies: the generation's id (what `POST /v1/feedback` rates)."""
    finish_reason: FinishReason | None = None
    interrupted: bool = False
    """The client went away while this reply streamed: the content is what it had received."""
    usage: dict[str, int] | None = None


class Conversation(BaseModel):
    """A conversation's settings."""

    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    updated_at: int
    model: str
    system: str | None
    """The system prompt (a preset's, rendered with its inputs, or the caller's own)."""
    preset: str | None = None
    inputs: dict[str, Any] | None = None
    sampling: dict[str, Any]
    """The conversation's default sampling settings (only those set)."""
    metadata: dict[str, str]
    message_count: int
    tools: list[dict[str, Any]] | None = None
    """The functions the assistant may call."""


class ConversationWithMessages(Conversation):
    """A conversation with one page of its history."""

    messages: list[MessageOut]
    """Oldest first: the newest turns, or those just before `before`."""
    has_more: bool
    """Older turns exist: ask again with `before` set to the first message's `seq`."""


class ConversationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Conversation]
    first_id: str | None
    last_id: str | None
    has_more: bool
    """More conversations follow: ask again with `after` set to `last_id`."""


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


class ConversationReply(GenerateResponse):
    """The assistant's reply: `POST /v1/generate`'s response, plus where it was stored."""

    conversation_id: str
    turn: int
    """The reply's `seq` in the conversation (the user's message is `turn - 1`)."""
