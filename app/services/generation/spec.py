"""What one generation asks for, before the core resolves it into a `Job`: the spec each
endpoint's request model translates itself into (`to_spec()`) and `GenerationService.plan` takes.

A plain frozen dataclass over the providers' own types, so wire models may build it without
knowing anything else of the services."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.providers.base import EmbedKind, Message, ToolChoice, ToolSpec


@dataclass(frozen=True, slots=True)
class GenerationSpec:
    """One generation's request. `overrides` are the client's own sampling values and always
    win; `defaults` (a preset's or a tuning variant's) come next. With a `prompt` (and no
    messages) the model continues that raw text. `text_param` names the request field that held
    the text, for errors (`messages`, or `prompt`). With `continue_from`, the answer to
    `messages` resumes after that text. `message_params` name each message's field in the
    request, for errors about one message (default `messages[i].content`)."""

    endpoint: str
    model: str | None
    messages: Sequence[Message] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    """OpenAI's stable id of the end user for abuse monitoring; kept only as a keyed hash."""
    id_prefix: str = "gen"
    message_params: Sequence[str] | None = None
    tools: Sequence[ToolSpec] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    logprobs: int | None = None
    """Top alternatives to report per token (None: no log probabilities)."""
    prompt: str | None = None
    text_param: str | None = None
    continue_from: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    """One `/v1/embeddings` request, before the embedding service resolves it: `texts`, or
    `token_ids` (cl100k token arrays, decoded to text by the service), never both. `kind` is how
    the model should read the texts (e5's `query: ` / `passage: `)."""

    model: str | None
    texts: Sequence[str] = ()
    token_ids: Sequence[Sequence[int]] = ()
    dimensions: int | None = None
    user: str | None = None
    kind: EmbedKind = "query"
    endpoint: str = "embeddings"
