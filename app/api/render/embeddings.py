"""The body of `POST /v1/embeddings` (`CreateEmbeddingResponse`), as OpenAI sends it."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
import orjson
from starlette.responses import Response

from app.services.retrieval.embeddings import EmbeddingResult


def embeddings_response(result: EmbeddingResult, encoding_format: Literal["float", "base64"]) -> Response:
    """Vectors as float32: numbers in float32's shortest form (`0.06676746`, not float64's 17
    digits), or each vector's little-endian float32 bytes in base64 (what the Python SDK asks
    for by default; the Node and .NET SDKs read nothing else)."""
    matrix = np.asarray(result.vectors, dtype="<f4").reshape(len(result.vectors), -1)
    if encoding_format == "base64":
        data: list[dict[str, object]] = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode("ascii")}
            for i, row in enumerate(matrix)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(matrix)]
    body = {
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
