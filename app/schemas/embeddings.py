"""Wire models of `POST /v1/embeddings`, in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from app.schemas.common import JsonNumber, Schema
from app.services.generation.spec import EmbeddingSpec

MAX_INPUTS = 2048
"""Inputs in one request (OpenAI's bound)."""
MAX_INPUT_TOKEN_IDS = 8192
"""Token ids in one token-array input (OpenAI's per-input bound)."""

MAX_TOKEN_ID = 100_276
"""The largest id of the cl100k_base vocabulary, which token-array inputs are read with."""

_Text = Annotated[str, Field(min_length=1)]
_TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]
_TokenIds = Annotated[list[_TokenId], Field(min_length=1, max_length=MAX_INPUT_TOKEN_IDS)]
EmbeddingInput = (
    _Text
    | Annotated[list[_Text], Field(min_length=1, max_length=MAX_INPUTS)]
    | _TokenIds
    | Annotated[list[_TokenIds], Field(min_length=1, max_length=MAX_INPUTS)]
)


class EmbeddingRequest(Schema):
    """OpenAI's embedding request."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    model: str = Field(min_length=1, max_length=200)
    """The embedding model (GET /v1/models lists them)."""
    input: EmbeddingInput
    """A string, a list of strings, a token array or a list of token arrays (cl100k_base ids):
    at most 2,048 inputs, none empty, each within the model's input tokens (8,192)."""
    encoding_format: Literal["float", "base64"] = "float"
    """`float`: lists of numbers; `base64`: each vector's little-endian float32 bytes in base64."""
    dimensions: Annotated[int | None, JsonNumber] = Field(default=None, ge=1, le=16_384)
    """Shorter vectors (truncated and re-normalised), where the model allows it."""
    user: str | None = Field(default=None, max_length=256)
    """Your end user's id (recorded, never sent upstream)."""
    input_type: Literal["query", "passage", "document"] | None = None
    """Not OpenAI's: how a model with query and passage modes (e5) reads the inputs. Unset: as
    queries, which the e5 authors advise for symmetric use (similarity, clustering); send
    `passage` (or `document`) when embedding texts to be searched."""

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        # One validator instead of pydantic's four-way union: one clear message per mistake,
        # and no lax coercions (`true` is not the token 1, `"5"` is not the token 5).
        if isinstance(value, str):
            if not value:
                raise ValueError("input cannot be an empty string")
            return value
        if not isinstance(value, list):
            raise ValueError("input must be a string, a list of strings, or token arrays")
        if not value:
            raise ValueError("input cannot be an empty list")
        if len(value) > MAX_INPUTS:
            raise ValueError(f"input has {len(value)} items; at most {MAX_INPUTS} are allowed")
        if all(isinstance(v, str) for v in value):
            for i, text in enumerate(value):
                if not text:
                    raise ValueError(f"input[{i}] is an empty string")
            return value
        if all(_is_token(v) for v in value):
            if len(value) > MAX_INPUT_TOKEN_IDS:
                raise ValueError(f"a token array may have at most {MAX_INPUT_TOKEN_IDS} tokens")
            return value
        if all(isinstance(v, list) for v in value):
            for i, ids in enumerate(value):
                if not ids:
                    raise ValueError(f"input[{i}] is an empty token array")
                if not all(_is_token(t) for t in ids):
                    raise ValueError(f"input[{i}] must hold only cl100k_base token ids (0 to {MAX_TOKEN_ID})")
                if len(ids) > MAX_INPUT_TOKEN_IDS:
                    raise ValueError(f"input[{i}] has more than {MAX_INPUT_TOKEN_IDS} tokens")
            return value
        raise ValueError(
            f"input must be all strings, all token ids (0 to {MAX_TOKEN_ID}), or all token arrays"
        )

    def to_spec(self) -> EmbeddingSpec:
        value = self.input
        texts: list[str] = []
        token_ids: list[list[int]] = []
        if isinstance(value, str):
            texts = [value]
        elif value and isinstance(value[0], str):
            texts = [v for v in value if isinstance(v, str)]
        elif value and isinstance(value[0], int):
            token_ids = [[v for v in value if isinstance(v, int)]]
        else:
            token_ids = [v for v in value if isinstance(v, list)]
        return EmbeddingSpec(
            model=self.model,
            texts=texts,
            token_ids=token_ids,
            dimensions=self.dimensions,
            user=self.user,
            kind="passage" if self.input_type in ("passage", "document") else "query",
        )


def _is_token(value: Any) -> bool:
    """A cl100k_base token id: a JSON integer (`5.0` is one too, as JSON Schema says) in range."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


class EmbeddingUsage(Schema):
    prompt_tokens: int
    total_tokens: int


class EmbeddingItem(Schema):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    """The vector, or with `encoding_format: base64` its float32 bytes in base64."""


class EmbeddingList(Schema):
    """OpenAI's `CreateEmbeddingResponse`."""

    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
