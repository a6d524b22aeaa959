"""Wire models of `POST /v1/chat/completions`, in OpenAI's shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from app.providers.base import FinishReason
from app.schemas.common import EffectiveSampling, SamplingFields, Schema, Timings, UsageOut


class TextPart(Schema):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str = Field()


class ChatMessageIn(Schema):
    """A message of the conversation so far."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field()
    name: str | None = Field(default=None, max_length=64)

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(Schema):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    """Send a last chunk with usage and no choices."""


class JsonSchemaFormat(Schema):
    """OpenAI's structured-output spec: the JSON Schema the answer must follow."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    """The JSON Schema itself (`schema` on the wire)."""
    strict: bool | None = None


class ResponseFormat(Schema):
    """Plain text, any JSON object, or JSON that follows a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only then")
        return self


class ChatCompletionRequest(SamplingFields):
    """OpenAI's chat completion request. Parameters beyond these are accepted only when the
    model's provider can honour them; otherwise they are refused with 400, never dropped."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1000)
    model: str | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    user: str | None = Field(default=None, max_length=256)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    """Checked here, honoured only by providers that list it in their `extra_params`."""

    @field_validator("messages")
    @classmethod
    def _needs_user_turn(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if all(m.role in ("system", "developer") for m in messages):
            raise ValueError("messages must contain at least one user or assistant message")
        return messages

    def extra_params(self) -> dict[str, Any]:
        """Parameters outside OpenAI's core set that the client actually set."""
        extra = {k: v for k, v in (self.model_extra or {}).items() if v is not None and v is not False}
        if self.response_format is not None:
            extra["response_format"] = self.response_format.model_dump(by_alias=True, exclude_none=True)
        return extra


class ChatMessageOut(Schema):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class ChatChoice(Schema):
    index: int
    message: ChatMessageOut
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(Schema):
    """OpenAI's `chat.completion`, plus this service's metadata fields."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut
    provider: str
    sampling: EffectiveSampling
    timings: Timings
    metadata: dict[str, Any] = Field(default_factory=dict)


class ChunkDelta(Schema):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None


class ChunkChoice(Schema):
    index: int
    delta: ChunkDelta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(Schema):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageOut | None = None
