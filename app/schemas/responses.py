"""Wire models of the Responses API (`/v1/responses`), in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, StrictBool, Tag, field_validator, model_validator

from app.errors import InvalidRequest
from app.providers.base import ToolChoice, ToolChoiceNamed, ToolSpec
from app.schemas.chat import JsonSchemaFormat
from app.schemas.common import EffectiveSampling, JsonNumber, Schema, Timings
from app.schemas.generate import MAX_PROMPT_CHARS
from app.schemas.vector_stores import Filters, HybridSearch

MAX_SEARCH_STORES = 50
"""Vector stores one file_search tool may search at once."""

MAX_INPUT_ITEMS = 1000

Text = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


def _kind(default: str | None) -> Any:
    """The `type` of an item or part (`default` when absent), as the tag of its union member.
    Tags are prefixed `tagged-union:` so that error messages name the client's own fields
    (`input[0].role`), not the member tried (see `app.errors`)."""

    def kind(value: Any) -> str | None:
        found = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", None)
        return f"tagged-union:{found}" if isinstance(found, str) else None

    return kind


class _Strict(Schema):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class InputText(_Strict):
    type: Literal["input_text"]
    text: Text


class OutputText(_Strict):
    """An earlier answer's text, sent back as part of the input."""

    type: Literal["output_text"]
    text: Text
    annotations: list[Any] = Field(default_factory=list, max_length=0)
    logprobs: list[Any] | None = None


ContentPart = Annotated[
    Annotated[InputText, Tag("tagged-union:input_text")]
    | Annotated[OutputText, Tag("tagged-union:output_text")],
    Discriminator(
        _kind(None),
        custom_error_type="invalid_content_part",
        custom_error_message=(
            "a content part is input_text or output_text (images and files are not supported)"
        ),
    ),
]


class MessageItem(_Strict):
    """A message of the conversation: the user's, a system or developer instruction, or an
    earlier answer of the assistant."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Text | Annotated[list[ContentPart], Field(max_length=100)]
    id: str | None = Field(default=None, max_length=64)
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionCallItem(_Strict):
    """A function call the model made earlier, sent back with its result."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=64)
    arguments: Text
    id: str | None = Field(default=None, max_length=64)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(_Strict):
    """The result of a function call, for the model to read."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=128)
    output: Text
    id: str | None = Field(default=None, max_length=64)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


InputItem = Annotated[
    Annotated[MessageItem, Tag("tagged-union:message")]
    | Annotated[FunctionCallItem, Tag("tagged-union:function_call")]
    | Annotated[FunctionCallOutputItem, Tag("tagged-union:function_call_output")],
    Discriminator(
        _kind("message"),
        custom_error_type="invalid_item",
        custom_error_message="an input item is a message, a function_call or a function_call_output",
    ),
]


class FunctionTool(_Strict):
    """A function the model may call (the only kind of tool served here)."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, Any] | None = None
    """The arguments' JSON Schema."""
    strict: StrictBool | None = None


class FileSearchRanking(_Strict):
    ranker: Literal["none", "auto", "default-2024-11-15"] = "auto"
    score_threshold: float = Field(default=0.0, ge=0, le=1)
    hybrid_search: HybridSearch | None = None


class FileSearchTool(_Strict):
    """Search the caller's vector stores and answer from what is found (run by genserve itself,
    for every provider)."""

    type: Literal["file_search"]
    vector_store_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_SEARCH_STORES
    )
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: Filters | None = None
    ranking_options: FileSearchRanking | None = None


Tool = Annotated[
    Annotated[FunctionTool, Tag("tagged-union:function")]
    | Annotated[FileSearchTool, Tag("tagged-union:file_search")],
    Discriminator(
        _kind(None),
        custom_error_type="invalid_tool",
        custom_error_message="a tool is of type function or file_search",
    ),
]


class NamedFunction(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)


class PlainTextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaTextFormat(JsonSchemaFormat):
    """Structured output: chat's `json_schema` spec with its type beside it, as the Responses
    API flattens it (what the SDK's `responses.parse(text_format=...)` sends)."""

    type: Literal["json_schema"]


TextFormat = Annotated[
    Annotated[PlainTextFormat, Tag("tagged-union:text")]
    | Annotated[JsonObjectFormat, Tag("tagged-union:json_object")]
    | Annotated[JsonSchemaTextFormat, Tag("tagged-union:json_schema")],
    Discriminator(
        _kind(None),
        custom_error_type="invalid_format",
        custom_error_message="text.format.type is text, json_object or json_schema",
    ),
]


class TextOptions(_Strict):
    """How the answer's text is shaped."""

    format: TextFormat


#: OpenAI's `include` values, with what genserve lacks to produce each one it does not.
INCLUDABLE = {
    "file_search_call.results": "",
    "web_search_call.results": "it has no web_search tool",
    "web_search_call.action.sources": "it has no web_search tool",
    "message.input_image.image_url": "input images are passed on, not kept as items",
    "computer_call_output.output.image_url": "it has no computer tool",
    "code_interpreter_call.outputs": "it has no code_interpreter tool",
    "reasoning.encrypted_content": "its models return no reasoning items",
    "message.output_text.logprobs": "the Responses API here returns no token log probabilities; "
    "chat completions and /v1/generate do",
}
SUPPORTED_INCLUDES = frozenset({"file_search_call.results"})
Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]


class CreateResponseRequest(_Strict):
    """OpenAI's `POST /v1/responses` request."""

    model: str = Field(min_length=1, max_length=200)
    """The model to use (required)."""
    input: (
        Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
        | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_INPUT_ITEMS)]
    )
    """Text (one user message), or message and function-call items."""
    instructions: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    """A system message for this response only (not carried over by `previous_response_id`)."""
    max_output_tokens: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=1_000_000)
    temperature: Annotated[float | None, JsonNumber] = Field(default=None, ge=0, le=2)
    top_p: Annotated[float | None, JsonNumber] = Field(default=None, gt=0, le=1)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextOptions | None = None
    """Plain text (the default), any JSON object, or JSON that follows a schema."""
    truncation: Literal["auto", "disabled"] | None = None
    """With `previous_response_id`: `auto` (the default here) keeps the newest exchanges that fit
    the context window; `disabled` sends the whole chain or refuses with 400."""
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=64)
    """Continue the conversation of this stored response."""
    store: StrictBool | None = True
    """Keep the response, to retrieve it or continue from it later (default true)."""
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = (
        Field(default=None, max_length=16)
    )
    stream: StrictBool | None = False
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    """A stable id of the end user (OpenAI's successor to `user`); stored only as a keyed hash, so
    that `DELETE /admin/users/{id}/data` can erase what they left."""
    include: list[Includable] | None = Field(default=None, max_length=len(INCLUDABLE))
    """Extra output data to include. `[]` (what the Agents SDK always sends) and
    `file_search_call.results` are accepted; a value genserve cannot produce is refused, by name."""

    @field_validator("include", mode="before")
    @classmethod
    def _includable(cls, value: Any) -> Any:
        for position, name in enumerate(value if isinstance(value, list) else ()):
            if not isinstance(name, str):
                continue  # not a string: the type check names it
            if name not in INCLUDABLE:
                raise InvalidRequest(
                    f"include[{position}]: '{name}' is not one of OpenAI's include values.",
                    param=f"include[{position}]",
                    code="invalid_value",
                )
            if name not in SUPPORTED_INCLUDES:
                raise InvalidRequest(
                    f"include[{position}]: genserve cannot produce '{name}' ({INCLUDABLE[name]}).",
                    param=f"include[{position}]",
                    code="unsupported_value",
                )
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            for position, tool in enumerate(value):
                kind = tool.get("type") if isinstance(tool, dict) else None
                if isinstance(kind, str) and kind not in ("function", "file_search"):
                    raise ValueError(
                        f"the built-in tool '{kind}' (tools[{position}]) is not supported; "
                        "only tools of type 'function' and 'file_search' are"
                    )
        return value

    @model_validator(mode="after")
    def _consistent_tools(self) -> CreateResponseRequest:
        names = [tool.name for tool in self.function_tools]
        if sum(isinstance(t, FileSearchTool) for t in self.tools or ()) > 1:
            raise InvalidRequest("At most one file_search tool.", param="tools", code="invalid_value")
        for i, name in enumerate(names):
            if name in names[:i]:
                raise InvalidRequest(
                    f"Duplicate tool name '{name}' (tools[{i}]).", param="tools", code="invalid_value"
                )
        if isinstance(self.tool_choice, NamedFunction) and self.tool_choice.name not in names:
            raise InvalidRequest(
                f"tool_choice names the function '{self.tool_choice.name}', which is not among the tools.",
                param="tool_choice",
                code="invalid_value",
            )
        return self

    def text_format(self) -> dict[str, Any]:
        """`text.format` as OpenAI echoes it in the response."""
        if self.text is None:
            return {"type": "text"}
        return self.text.format.model_dump(by_alias=True, exclude_none=True)

    def response_format(self) -> dict[str, Any] | None:
        """`text.format` in chat completions' `response_format` shape (what providers take), or
        None for plain text."""
        fmt = self.text.format if self.text is not None else None
        if isinstance(fmt, JsonObjectFormat):
            return {"type": "json_object"}
        if isinstance(fmt, JsonSchemaTextFormat):
            spec = fmt.model_dump(by_alias=True, exclude_none=True, exclude={"type"})
            return {"type": "json_schema", "json_schema": spec}
        return None

    @property
    def function_tools(self) -> list[FunctionTool]:
        return [t for t in self.tools or () if isinstance(t, FunctionTool)]

    @property
    def file_search(self) -> FileSearchTool | None:
        return next((t for t in self.tools or () if isinstance(t, FileSearchTool)), None)

    def tool_specs(self) -> tuple[ToolSpec, ...]:
        return tuple(
            ToolSpec(t.name, t.description, t.parameters or {"type": "object", "properties": {}})
            for t in self.function_tools
        )

    def tool_choice_value(self) -> ToolChoice:
        if isinstance(self.tool_choice, NamedFunction):
            return ToolChoiceNamed(self.tool_choice.name)
        return self.tool_choice or "auto"

    @property
    def items(self) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)


# -- what the API answers (documented for the OpenAPI document; bodies are built in
# app/api/render/responses.py) ---------------------------------------------------------------


class ResponseUsage(Schema):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(Schema):
    """OpenAI's `response`, plus this service's `provider`, `sampling`, `timings` and
    `service_metadata`."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete"]
    error: None = None
    incomplete_details: dict[str, str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[dict[str, Any]]
    """Message and function_call items, in OpenAI's shapes."""
    parallel_tool_calls: bool
    previous_response_id: str | None = None
    reasoning: dict[str, Any]
    store: bool
    temperature: float
    text: dict[str, Any]
    tool_choice: Literal["none", "auto", "required"] | dict[str, str]
    tools: list[dict[str, Any]]
    top_p: float
    truncation: Literal["disabled", "auto"]
    usage: ResponseUsage | None = None
    """Absent while the response is in progress."""
    user: str | None = None
    metadata: dict[str, str]
    provider: str | None = None
    sampling: EffectiveSampling | None = None
    timings: Timings | None = None
    service_metadata: dict[str, Any] | None = None


class ResponseStreamEvent(Schema):
    """One event of a response's stream (`response.created` … `response.completed`); the
    fields besides these depend on its `type`."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    type: str
    sequence_number: int


class ResponseDeleted(Schema):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool


class InputItemList(Schema):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
