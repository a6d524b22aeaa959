"""The Provider protocol and the project's own request/result types that providers speak."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
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
class Message:
    role: Role
    content: str


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


class CompletionAssembler:
    """Collects a stream's chunks into the `Completion` they add up to (the one place that
    knows how deltas, finish reasons and usage combine)."""

    __slots__ = ("finish", "produced", "texts", "usage")

    def __init__(self) -> None:
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, FinishReason] = {}
        self.usage: Usage | None = None
        self.produced = 0
        """Text chunks seen (about one token each)."""

    def add(self, chunk: Chunk) -> None:
        if chunk.text:
            self.produced += 1
            self.texts.setdefault(chunk.index, []).append(chunk.text)
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
                Choice(index=i, text="".join(self.texts.get(i, ())), finish_reason=self.finish.get(i, "stop"))
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
