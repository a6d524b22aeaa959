"""`GET /v1/models` and `GET /v1/models/{id}`: the model table in OpenAI's shapes."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EmbeddingsDep, GenerationDep, StateDep
from app.errors import ModelNotFound
from app.schemas.models import ModelCard, ModelList
from app.settings import EmbeddingRoute, ModelRoute

router = APIRouter(tags=["models"])


def _card(name: str, route: ModelRoute, created: int, why_not: str | None) -> ModelCard:
    return ModelCard(
        id=name,
        created=created,
        owned_by=route.provider,
        context_window=route.context_window,
        max_output_tokens=route.max_output_tokens,
        continuation=why_not is None,
        continuation_note=why_not,
    )


def _embedding_card(name: str, route: EmbeddingRoute, created: int) -> ModelCard:
    return ModelCard(
        id=name,
        created=created,
        owned_by=route.provider,
        context_window=route.max_input_tokens,
        max_output_tokens=0,
        dimensions=route.dimensions,
        continuation_note="An embedding model: POST /v1/embeddings.",
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(service: GenerationDep, embeddings: EmbeddingsDep, state: StateDep) -> ModelList:
    """The models this service can route to: generation models, then embedding models."""
    return ModelList(
        data=[
            *(
                _card(n, r, state.started_at, service.continuation_unsupported(n))
                for n, r in service.model_table.items()
            ),
            *(_embedding_card(n, r, state.started_at) for n, r in embeddings.table.items()),
        ]
    )


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(
    model_id: str, service: GenerationDep, embeddings: EmbeddingsDep, state: StateDep
) -> ModelCard:
    """One model of the table; 404 when it is not there."""
    route = service.model_table.get(model_id)
    if route is None:
        embedding = embeddings.table.get(model_id)
        if embedding is not None:
            return _embedding_card(model_id, embedding, state.started_at)
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    return _card(model_id, route, state.started_at, service.continuation_unsupported(model_id))
