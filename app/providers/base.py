"""The Provider protocol and the project's own request/result types that providers speak."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]

#: Sampling fields every provider honours; anything else must be in `Provider.extra_params`.
CORE_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "n",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    }
)


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a user turn, for vision-capable upstreams: a URL or a `data:` URI."""

    url: str
    detail: str | None = None
    param: str | None = None
    """Where the client put it (`messages[1].content[2]`), for error messages."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call of one of the request's tools, as the model made it. `arguments` is the JSON
    text the model wrote (OpenAI's shape: a string, not a parsed object)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. An assistant turn that calls tools carries `tool_calls` (its `content` may then
    be empty); a `tool` turn answers the call named by `tool_call_id`."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    images: tuple[ImagePart, ...] = ()
    """Image parts of a user turn, after its text (only vision-capable routes accept them)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: its name, what it does, and a JSON Schema of its
    arguments."""

    name: str
    description: str | None
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolChoiceNamed:
    """`tool_choice` naming one function: the model must call exactly that one."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceNamed


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token, its log probability and the most likely alternatives at its place.
    The `token` strings of a choice join back to its text; `bytes` are the token's own UTF-8
    bytes (a character split across tokens shows in the token that completes it)."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call `index` has its `id` and
    `name`; later pieces carry more of `arguments`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Sampling:
    """Effective sampling settings: every field resolved, nothing left to defaults."""

    temperature: float
    top_p: float
    max_tokens: int
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "n": self.n,
            "stop": list(self.stop),
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What a provider is asked to do. `model` is the upstream model name."""

    model: str
    messages: tuple[Message, ...]
    sampling: Sampling
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Provider-specific parameters already checked against `Provider.extra_params`."""
    user: str | None = None
    prompt: str | None = None
    """Raw text to continue exactly as given, with no chat template (`messages` is then empty):
    legacy completions, and continuing from a prefix."""

    def as_messages(self) -> tuple[Message, ...]:
        """The request's text as messages: its messages, or its raw prompt as one user turn (how
        a prompt reaches a chat-only upstream, and how its size is estimated)."""
        if self.prompt is None:
            return self.messages
        return (Message("user", self.prompt),)

    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    logprobs: int | None = None
    """None: no log probabilities; 0–20: each token's, with that many alternatives."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    text: str
    finish_reason: FinishReason
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished generation."""

    model: str
    choices: tuple[Choice, ...]
    usage: Usage
    seed: int | None = None
    """The seed actually used, when the provider knows it."""
    ttft_ms: float | None = None
    """Milliseconds until the first text, when the provider could see it."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a stream: a text delta for choice `index`, its finish reason when it ends,
    and, in the last chunk only, the usage of the whole generation."""

    index: int = 0
    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None
    """The tokens of `text`, when the request asked for log probabilities."""


class CallAssembler:
    """Puts streamed tool-call fragments of one choice back together, by their index."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}
        """index → [id, name, arguments so far]"""

    def add(self, deltas: tuple[ToolCallDelta, ...]) -> None:
        for delta in deltas:
            call = self._calls.setdefault(delta.index, ["", "", ""])
            if delta.id:
                call[0] = delta.id
            if delta.name:
                call[1] = delta.name
            call[2] += delta.arguments

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(*self._calls[i]) for i in sorted(self._calls))


def tool_messages(tools: Sequence[ToolSpec]) -> tuple[Message, ...]:
    """Tool definitions as the system text they amount to, for counting prompt tokens."""
    if not tools:
        return ()
    text = json.dumps(
        [{"name": t.name, "description": t.description, "parameters": dict(t.parameters)} for t in tools],
        separators=(",", ":"),
    )
    return (Message("system", text),)


def prompt_messages(request: GenerationRequest) -> tuple[Message, ...]:
    """What a request's prompt holds, for counting: its messages and its tool definitions."""
    return (*request.as_messages(), *tool_messages(request.tools))


@runtime_checkable
class ShowsChatText(Protocol):
    """A provider that knows the exact text its model reads for a conversation (its chat
    template applied, the reply opened). Appending part of an answer to that text and
    continuing it raw (`GenerationRequest.prompt`) resumes the answer from there, exactly."""

    def chat_text(self, model: str, messages: tuple[Message, ...]) -> str | None:
        """The prompt text of `messages` with the assistant's reply opened; None when the
        template is not known."""
        ...


class CompletionAssembler:
    """Collects a stream's chunks into the `Completion` they add up to (the one place that
    knows how deltas, tool-call fragments, log probabilities, finish reasons and usage combine).
    With `logprobs`, every choice gets its tokens (an empty tuple rather than None)."""

    __slots__ = ("calls", "finish", "logprobs", "produced", "texts", "usage", "wants_logprobs")

    def __init__(self, logprobs: bool = False) -> None:
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, FinishReason] = {}
        self.calls: dict[int, CallAssembler] = {}
        self.logprobs: dict[int, list[TokenLogprob]] = {}
        self.wants_logprobs = logprobs
        self.usage: Usage | None = None
        self.produced = 0
        """Text chunks and call fragments seen (about one token each)."""

    def add(self, chunk: Chunk) -> None:
        if chunk.text:
            self.produced += 1
            self.texts.setdefault(chunk.index, []).append(chunk.text)
        if chunk.tool_calls:
            self.produced += 1
            self.calls.setdefault(chunk.index, CallAssembler()).add(chunk.tool_calls)
        if chunk.logprobs:
            self.logprobs.setdefault(chunk.index, []).extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish[chunk.index] = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage

    def all_finished(self, n: int) -> bool:
        return len(self.finish) >= n

    def completion(
        self,
        model: str,
        n: int,
        *,
        usage: Usage | None = None,
        seed: int | None = None,
        ttft_ms: float | None = None,
    ) -> Completion:
        """The `n` choices so far (an unfinished one reads as `stop`)."""
        return Completion(
            model=model,
            choices=tuple(
                Choice(
                    index=i,
                    text="".join(self.texts.get(i, ())),
                    finish_reason=self.finish.get(i, "stop"),
                    tool_calls=self.calls[i].calls() if i in self.calls else (),
                    logprobs=tuple(self.logprobs.get(i, ())) if self.wants_logprobs else None,
                )
                for i in range(n)
            ),
            usage=usage or self.usage or Usage(),
            seed=seed,
            ttft_ms=ttft_ms,
        )


@runtime_checkable
class Provider(Protocol):
    """A backend that turns messages into text."""

    name: str
    """Short name reported to clients (`openai`, `local`)."""
    extra_params: frozenset[str]
    """Request parameters beyond `CORE_PARAMS` this provider can honour."""

    async def complete(self, request: GenerationRequest) -> Completion:
        """Generate all `request.sampling.n` choices and return them at once."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Yield text deltas as they are produced; the last chunk carries usage.
        Closing the iterator early stops the generation."""
        ...

    async def ready(self) -> bool:
        """Whether the provider can serve requests now."""
        ...

    def count_tokens(self, model: str, messages: tuple[Message, ...]) -> int:
        """Tokens the messages occupy in the model's context window (prompt side)."""
        ...

    async def aclose(self) -> None:
        """Release clients, threads and models."""
        ...


EmbedKind = Literal["query", "passage"]
"""What a text is to an embedding model: a search query, or a passage to be found."""
Priority = Literal["interactive", "background"]
"""Who waits for an embedding: a request (interactive) or ingestion (background); a provider
that queues serves interactive work first."""


@dataclass(frozen=True, slots=True)
class Embeddings:
    """The vectors of one embedding call."""

    vectors: list[list[float]]
    """One per input, in input order, L2-normalised, `dimensions` long."""
    prompt_tokens: int
    """Tokens the model read for all inputs (its own tokenizer's count)."""


@runtime_checkable
class Embedder(Protocol):
    """A backend that turns texts into vectors."""

    model: str
    """Public model name (`multilingual-e5-small`)."""
    dimensions: int
    """Native length of the vectors."""
    max_input_tokens: int
    """Most tokens one input may have."""

    async def embed(
        self, texts: Sequence[str], *, kind: EmbedKind = "passage", priority: Priority = "interactive"
    ) -> Embeddings:
        """Embed `texts` in one call (the provider batches them as it sees fit). `kind` lets a
        model that marks queries and passages differently (e5's prefixes) do so; `priority` puts
        background work behind interactive work."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs as one input (the model's own tokenizer where it has one)."""
        ...

    async def aclose(self) -> None:
        """Release threads, clients and models."""
        ...
