"""Wire models of `POST /v1/chat/completions`, in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, ValidationInfo, field_validator, model_validator

from app.errors import InvalidRequest
from app.providers.base import (
    FinishReason,
    ImagePart,
    Message,
    ToolCall,
    ToolChoice,
    ToolChoiceNamed,
    ToolSpec,
)
from app.schemas.common import EffectiveSampling, JsonNumber, SamplingFields, Schema, Timings, UsageOut
from app.schemas.generate import MAX_PROMPT_CHARS, TokenLogprobOut
from app.services.generation.spec import GenerationSpec


class TextPart(Schema):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str = Field()


class ImageUrl(Schema):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    """An `https:` URL or a `data:` URI of the image."""
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(Schema):
    """An image, for models whose route is marked vision-capable."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImageUrlPart, Field(discriminator="type")]

TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionCallIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOOL_NAME)
    arguments: str = Field(max_length=MAX_PROMPT_CHARS)
    """The arguments as JSON text, as the model wrote them."""


class ToolCallIn(Schema):
    """A tool call an earlier assistant turn made."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(Schema):
    """A message of the conversation so far. An assistant turn may call tools (`tool_calls`,
    with `content` then optional); a `tool` turn answers one call by its `tool_call_id`."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(default=None, validate_default=True)
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[ToolCallIn] | None = Field(default=None, min_length=1, max_length=128)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=256)
    refusal: str | None = None

    @field_validator("content")
    @classmethod
    def _content_for_role(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.data.get("role") != "assistant":
            raise ValueError("content is required (only an assistant turn that calls tools may omit it)")
        return value

    @field_validator("tool_calls")
    @classmethod
    def _calls_for_assistant(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.data.get("role") != "assistant":
            raise ValueError("only assistant messages may carry tool_calls")
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _id_for_tool(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.data.get("role") != "tool":
            raise ValueError("only tool messages answer a tool call")
        return value

    @model_validator(mode="after")
    def _complete(self) -> ChatMessageIn:
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def images(self) -> list[tuple[int, ImageUrlPart]]:
        """The image parts, with their position among the content parts."""
        if not isinstance(self.content, list):
            return []
        return [(i, part) for i, part in enumerate(self.content) if isinstance(part, ImageUrlPart)]


class FunctionDefinition(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOOL_NAME)
    """The function's name, as the model will call it."""
    description: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """A JSON Schema of the arguments object."""
    strict: StrictBool | None = None

    @field_validator("parameters")
    @classmethod
    def _an_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError("the parameters schema must describe an object (type 'object')")
        return value


class Tool(Schema):
    """A function the model may call."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOOL_NAME)


class NamedToolChoice(Schema):
    """Call exactly this function."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


class StreamOptions(Schema):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False
    """Send a last chunk with usage and no choices."""


class JsonSchemaFormat(Schema):
    """OpenAI's structured-output spec: the JSON Schema the answer must follow."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    """The JSON Schema itself (`schema` on the wire)."""
    strict: StrictBool | None = None


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

    messages: list[ChatMessageIn] = Field(
        min_length=1,
        max_length=1000,
        # What `_needs_user_turn` checks, said in the OpenAPI document.
        json_schema_extra={"contains": {"properties": {"role": {"enum": ["user", "assistant", "tool"]}}}},
    )
    model: str = Field(min_length=1, max_length=256)
    """The model to use (required, as on OpenAI); GET /v1/models lists them."""
    max_completion_tokens: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=1_000_000)
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    """A stable id of the end user (OpenAI's successor to `user`); stored only as a keyed hash, so
    that `DELETE /admin/users/{id}/data` can erase what they left."""
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    """Checked here, honoured only by providers that list it in their `extra_params`."""
    tools: list[Tool] | None = Field(default=None, max_length=128)
    """Functions the model may call."""
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    """`auto` (the default with tools): text or a call; `required`: a call; `none`: text; or a
    named function to call."""
    parallel_tool_calls: StrictBool | None = None
    """Whether the model may call several tools in one turn (upstreams; the embedded model makes
    one call per turn)."""
    logprobs: StrictBool | None = None
    """Return each generated token's log probability."""
    top_logprobs: Annotated[int | None, JsonNumber] = Field(default=None, ge=0, le=20)
    """With `logprobs`, also the most likely alternatives at each token (0–20)."""

    @field_validator("messages")
    @classmethod
    def _needs_user_turn(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if all(m.role in ("system", "developer") for m in messages):
            raise ValueError("messages must contain at least one user or assistant message")
        return messages

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest(
                "top_logprobs requires logprobs to be true.", param="top_logprobs", code="invalid_value"
            )
        if self.tool_choice is not None and not self.tools:
            raise InvalidRequest(
                "tool_choice is only allowed when tools are specified.",
                param="tool_choice",
                code="invalid_value",
            )
        if self.tools:
            names = [t.function.name for t in self.tools]
            for i, name in enumerate(names):
                if name in names[:i]:
                    raise InvalidRequest(
                        f"Duplicate tool name '{name}'.",
                        param=f"tools[{i}].function.name",
                        code="invalid_value",
                    )
            if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
                raise InvalidRequest(
                    f"tool_choice names the function '{self.tool_choice.function.name}', which is not "
                    "among the tools.",
                    param="tool_choice.function.name",
                    code="invalid_value",
                )
        answered: set[str] = set()
        for i, message in enumerate(self.messages):
            if message.tool_calls:
                answered.update(call.id for call in message.tool_calls)
            if message.tool_call_id is not None and message.tool_call_id not in answered:
                raise InvalidRequest(
                    f"messages[{i}] answers the tool call '{message.tool_call_id}', which no earlier "
                    "assistant message made.",
                    param=f"messages[{i}].tool_call_id",
                    code="invalid_value",
                )
        return self

    def to_spec(self) -> GenerationSpec:
        """The generation this request asks for (`max_completion_tokens` is chat's newer name
        for `max_tokens`)."""
        overrides = self.sampling_overrides()
        if self.max_completion_tokens is not None:
            overrides["max_tokens"] = self.max_completion_tokens
        return GenerationSpec(
            endpoint="chat",
            model=self.model,
            messages=self.provider_messages(),
            overrides=overrides,
            extra=self.extra_params(),
            user=self.user,
            safety_identifier=self.safety_identifier,
            id_prefix="chatcmpl",
            tools=self.tool_specs(),
            tool_choice=self.tool_choice_value(),
            parallel_tool_calls=self.parallel_tool_calls is not False,
            logprobs=self.top_logprobs_value(),
        )

    def tool_specs(self) -> tuple[ToolSpec, ...]:
        return tuple(
            ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in self.tools or ()
        )

    def tool_choice_value(self) -> ToolChoice:
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            return ToolChoiceNamed(choice.function.name)
        return choice or "auto"

    def top_logprobs_value(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def provider_messages(self) -> list[Message]:
        """The conversation in the providers' terms (`developer` is a system turn)."""
        out = []
        for i, m in enumerate(self.messages):
            role = "system" if m.role == "developer" else m.role
            out.append(
                Message(
                    role,
                    m.text,
                    tool_calls=tuple(
                        ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()
                    ),
                    tool_call_id=m.tool_call_id,
                    name=m.name,
                    images=tuple(
                        ImagePart(
                            part.image_url.url, part.image_url.detail, param=f"messages[{i}].content[{j}]"
                        )
                        for j, part in m.images()
                    ),
                )
            )
        return out

    def extra_params(self) -> dict[str, Any]:
        """Parameters outside OpenAI's core set that the client actually set."""
        extra = {k: v for k, v in (self.model_extra or {}).items() if v is not None and v is not False}
        if self.response_format is not None:
            extra["response_format"] = self.response_format.model_dump(by_alias=True, exclude_none=True)
        return extra


class ChoiceLogprobs(Schema):
    content: list[TokenLogprobOut] | None
    """The generated tokens; their `token` strings join back to the message's content."""
    refusal: None = None


class FunctionCallOut(Schema):
    name: str
    arguments: str
    """The arguments as JSON text."""


class ToolCallOut(Schema):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(Schema):
    role: Literal["assistant"] = "assistant"
    content: str | None
    """The text; null when the turn only calls tools."""
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    """The calls the model made (then `finish_reason` is `tool_calls`)."""


class ChatChoice(Schema):
    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    """With `logprobs: true`: every token of the content."""
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


class FunctionCallDelta(Schema):
    name: str | None = None
    """On a call's first fragment."""
    arguments: str | None = None
    """The next piece of the arguments' JSON text."""


class ToolCallDeltaOut(Schema):
    index: int
    """Which call of the turn this fragment belongs to."""
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class ChunkDelta(Schema):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None


class ChunkChoice(Schema):
    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(Schema):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageOut | None = None
