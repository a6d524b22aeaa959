"""Wire models of `GET /v1/models`, in OpenAI's list and model shapes."""

from __future__ import annotations

from typing import Literal

from app.schemas.common import Schema


class ModelCard(Schema):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    """The provider that serves the model (`openai`, `local`)."""
    context_window: int
    max_output_tokens: int
    continuation: bool = False
    """Whether `/v1/generate` can resume an answer from inside (`continue_from`, branching)."""
    continuation_note: str | None = None
    """Why it cannot, when it cannot."""
    dimensions: int | None = None
    """An embedding model's vector length (None: a generation model). Embedding models take
    POST /v1/embeddings only; their `context_window` is their input tokens, and they generate none."""


class ModelList(Schema):
    object: Literal["list"] = "list"
    data: list[ModelCard]
