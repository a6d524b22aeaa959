"""Grounded answers' shared route step: search, then answer (or say the documents do not), then
attach `metadata.grounding` with the citations the answer drew on, streamed or not."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from app.api.render.generate import generate_body, generate_stream
from app.api.streaming import sse_response, until_disconnected
from app.errors import InvalidRequest
from app.providers.base import Chunk
from app.schemas.common import GroundingFields
from app.services.apps.grounding import Grounding, ground, no_answer, no_answer_stream
from app.services.apps.vector_stores import VectorStoreService
from app.services.generation.context import RequestContext
from app.services.generation.pipeline import GenerationService, Job, Outcome
from app.settings import Settings


async def search(
    body: GroundingFields,
    question: object,
    *,
    param: str,
    where: tuple[RequestContext, Request, VectorStoreService, Settings],
) -> Grounding:
    """The passages for `question` (the field `param` of the request)."""
    ctx, request, stores, settings = where
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequest(f"'{param}' must be a non-empty string.", param=param, code="invalid_input")
    threshold = settings.grounding_score_threshold if body.score_threshold is None else body.score_threshold
    return await until_disconnected(
        request,
        ground(
            stores,
            ctx,
            body.vector_store_ids or [],
            question,
            max_results=body.max_num_results or settings.grounding_max_passages,
            threshold=threshold,
        ),
    )


async def reply(
    job: Job, grounding: Grounding, service: GenerationService, request: Request, *, stream: bool
) -> Response | dict[str, object]:
    """Run `job` (or, with no relevant passage, say the documents do not answer) and answer in
    `/v1/generate`'s shape with `metadata.grounding`."""
    if stream:
        items = service.stream(job) if grounding.answerable else no_answer_stream(job)
        render = generate_stream(job.id)

        def with_citations(item: Chunk | Outcome) -> list[bytes]:
            if isinstance(item, Outcome):
                item.job.metadata["grounding"] = grounding.metadata(_text(item))
            return render(item)

        return await sse_response(items, with_citations, request)
    if grounding.answerable:
        outcome = await until_disconnected(request, service.complete(job))
    else:
        outcome = no_answer(job)
    outcome.job.metadata["grounding"] = grounding.metadata(_text(outcome))
    return generate_body(outcome)


def _text(outcome: Outcome) -> str:
    c = outcome.completion
    return c.choices[0].text if c.choices else ""
