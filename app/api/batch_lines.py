"""How one batch line runs: the endpoint's own body model, application service and renderer,
without HTTP. Each endpoint here mirrors its route in app/api/routes/ (validate -> one service
call -> render), so a line's answer is exactly what that route returns for the request alone,
errors included (a body the route would refuse gets the route's 400 body)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.api.render.chat import chat_body
from app.api.render.completions import completion_body
from app.api.render.embeddings import embeddings_body
from app.api.render.generate import generate_body
from app.api.render.responses import response_body
from app.errors import AppError, InvalidRequest, validation_error
from app.schemas.chat import ChatCompletionRequest
from app.schemas.completions import CompletionRequest
from app.schemas.embeddings import EmbeddingRequest
from app.schemas.generate import GenerateRequest
from app.schemas.responses import CreateResponseRequest
from app.services.apps import completions
from app.services.apps.batches import LineResult
from app.services.apps.responses import ResponseService
from app.services.generation.context import RequestContext
from app.services.generation.pipeline import GenerationService
from app.services.retrieval.embeddings import EmbeddingService

M = TypeVar("M", bound=BaseModel)
_NO_STREAM = InvalidRequest("A batch request cannot stream: set stream to false.", param="stream")


def _parse(model: type[M], body: dict[str, Any]) -> M:
    """The route's validation: a pydantic error becomes the same 400 FastAPI's handler sends."""
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        errors = [
            {**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)
        ]
        raise validation_error(RequestValidationError(errors)) from None
    if getattr(parsed, "stream", False):
        raise _NO_STREAM
    return parsed


class LineRunner:
    """The `LineExecutor` a `BatchService` is built with."""

    def __init__(
        self, generation: GenerationService, embeddings: EmbeddingService, responses: ResponseService
    ) -> None:
        self._generation = generation
        self._embeddings = embeddings
        self._responses = responses
        self._by_endpoint: dict[
            str, Callable[[RequestContext, dict[str, Any]], Awaitable[dict[str, Any]]]
        ] = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embed,
            "/v1/responses": self._respond,
            "/v1/generate": self._generate,
        }

    async def __call__(self, ctx: RequestContext, endpoint: str, body: dict[str, Any]) -> LineResult:
        run = self._by_endpoint[endpoint]
        try:
            return LineResult(200, await run(ctx, body))
        except AppError as exc:
            return LineResult(exc.status_code, exc.body(), retry_after=exc.retry_after)

    async def _chat(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        request = _parse(ChatCompletionRequest, body)
        job = self._generation.plan(ctx, request.to_spec())
        return chat_body(await self._generation.complete(job))

    async def _completions(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        request = _parse(CompletionRequest, body)
        batch = completions.plan(
            self._generation,
            ctx,
            model=request.model,
            prompts=request.prompts,
            overrides=request.sampling_overrides(),
            extra=request.extra_params(),
            user=request.user,
            logprobs=request.logprobs,
        )
        return completion_body(await completions.complete(self._generation, batch), bool(request.echo))

    async def _embed(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        request = _parse(EmbeddingRequest, body)
        result = await self._embeddings.create(ctx, request.to_spec())
        return embeddings_body(result, request.encoding_format)

    async def _respond(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        request = _parse(CreateResponseRequest, body)
        draft = await self._responses.prepare(ctx, request)
        return response_body(await self._responses.complete(draft))

    async def _generate(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        request = _parse(GenerateRequest, body)
        job = self._generation.plan(ctx, request.to_spec())
        return generate_body(await self._generation.complete(job))
