"""`POST /v1/embeddings`: OpenAI's embeddings, from the embedded model or an upstream."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.admission import metered_per_job
from app.api.deps import CtxDep, EmbeddingsDep
from app.api.render.embeddings import embeddings_response
from app.api.streaming import until_disconnected
from app.schemas.embeddings import EmbeddingList, EmbeddingRequest

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=EmbeddingList)
@metered_per_job
async def create_embeddings(
    body: EmbeddingRequest, ctx: CtxDep, service: EmbeddingsDep, request: Request
) -> Response:
    """Embed the inputs, as OpenAI's API does (vectors as floats or base64)."""
    result = await until_disconnected(request, service.create(ctx, body.to_spec()))
    return embeddings_response(result, body.encoding_format)
