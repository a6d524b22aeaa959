"""The body of `POST /v1/embeddings` (`CreateEmbeddingResponse`), as OpenAI sends it."""

from __future__ import annotations

import array
import base64
import sys
from typing import Any, Literal

import orjson
from starlette.responses import Response

from app.services.retrieval.embeddings import EmbeddingResult


def _base64(vector: list[float]) -> str:
    """A vector as its little-endian float32 bytes, in base64."""
    floats = array.array("f", vector)
    if sys.byteorder == "big":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")


def embeddings_response(result: EmbeddingResult, encoding_format: Literal["float", "base64"]) -> Response:
    """Vectors as numbers, or as base64 of little-endian float32 (what the Python SDK asks for
    by default; the Node and .NET SDKs read nothing else)."""
    return Response(orjson.dumps(embeddings_body(result, encoding_format)), media_type="application/json")


def embeddings_body(result: EmbeddingResult, encoding_format: Literal["float", "base64"]) -> dict[str, Any]:
    """The body of `embeddings_response` (a batch line's answer too)."""
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _base64(vector) if encoding_format == "base64" else vector,
        }
        for i, vector in enumerate(result.vectors)
    ]
    body = {
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return body
