"""Wire models of the Responses API (`/v1/responses`), in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator

from app.schemas.common import Schema
from app.schemas.generate import MAX_PROMPT_CHARS

MAX_INPUT_ITEMS = 1000

Text = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


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


class MessageItem(_Strict):
    """A message of the conversation: the user's, a system or developer instruction, or an
    earlier answer of the assistant."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Text | list[Annotated[InputText | OutputText, Discriminator("type")]] = Field(max_length=100)
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


def _item_type(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_type),
]


class FunctionTool(_Strict):
    """A function the model may call (the only kind of tool served here)."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, Any] | None = None
    """The arguments' JSON Schema."""
    strict: bool | None = None


class NamedFunction(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)


class CreateResponseRequest(_Strict):
    """OpenAI's `POST /v1/responses` request."""

    model: str = Field(min_length=1, max_length=200)
    """The model to use (required)."""
    input: Text | list[InputItem] = Field(min_length=1, max_length=MAX_INPUT_ITEMS)
    """Text (one user message), or message and function-call items."""
    instructions: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    """A system message for this response only (not carried over by `previous_response_id`)."""
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[FunctionTool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=64)
    """Continue the conversation of this stored response."""
    store: bool | None = True
    """Keep the response, to retrieve it or continue from it later (default true)."""
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = (
        Field(default=None, max_length=16)
    )
    stream: bool | None = False
    user: str | None = Field(default=None, max_length=256)

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            for position, tool in enumerate(value):
                kind = tool.get("type") if isinstance(tool, dict) else None
                if isinstance(kind, str) and kind != "function":
                    raise ValueError(
                        f"the built-in tool '{kind}' (tools[{position}]) is not supported; "
                        "only tools of type 'function' are"
                    )
        return value

    @property
    def items(self) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)
