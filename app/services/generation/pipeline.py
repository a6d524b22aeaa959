"""Generation: resolve the model, settle the sampling settings, call the provider, time it.

Every endpoint (generate, chat, presets, conversations) plans a `Job` here and runs it with
`complete` or `stream`, so policies added later apply to all of them alike.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.clock import Clocks
from app.errors import InvalidRequest, ModelNotFound, UnsupportedParameter
from app.providers.base import (
    Chunk,
    Completion,
    CompletionAssembler,
    GenerationRequest,
    Message,
    Provider,
    Sampling,
    ShowsChatText,
    Usage,
    prompt_messages,
    tool_messages,
)
from app.services.generation.context import RequestContext
from app.services.generation.spec import GenerationSpec
from app.settings import ModelRoute, Settings


@dataclass(slots=True)
class Job:
    """One planned generation: which model, which provider, what to send, and why."""

    id: str
    endpoint: str
    ctx: RequestContext
    """The request this job serves: its caller, options, id and deadline."""
    model: str
    """The public model name the client asked for (or the default)."""
    route: ModelRoute
    provider: Provider
    request: GenerationRequest
    tuned: bool = False
    variant: str | None = None
    preset: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    """Facts reported back to the client (turns left out, redactions, ...)."""
    seed_fixed: bool = False
    """The seed was chosen by the client or a preset, not drawn at random (makes it cacheable)."""
    privacy: Literal["off", "redact", "block"] | None = None
    """A preset's privacy mode; the strictest of this, the request's and the default applies."""
    allowed_models: frozenset[str] | None = None
    """Models the caller may use (set by the access hook); fallbacks outside it are skipped."""
    prompt_tokens: int | None = None
    """The prompt's size as counted when planning (quotas reserve it without counting again)."""
    prepaid: Prepaid | None = None
    """Tokens reserved up front for this job's request (it draws on them instead of reserving)."""
    conceal: Callable[[str], str] | None = None
    """What stored text must become under the job's privacy mode (set by the privacy step when
    it redacted something): turns and records keep the placeholders, not the values."""
    prefix: str | None = None
    """The start of the answer the client gave (`continue_from`): the model continued after it,
    and the answer's text begins with it."""
    end_user: str | None = None
    """The request's `user` as the client sent it (privacy may pseudonymise `request.user`): the
    record keeps only its keyed hash, so one end user's data can be erased."""
    safety_identifier: str | None = None
    created: int = 0
    """Unix time the job was planned (the response's `created`)."""


@dataclass(slots=True)
class Outcome:
    """A finished generation with its measurements."""

    job: Job
    completion: Completion
    created: int
    ttft_ms: float
    total_ms: float
    aborted: bool = False
    """The stream was cut short (client gone or failure); usage counts what was produced."""

    def sampling(self) -> dict[str, Any]:
        out = self.job.request.sampling.as_dict()
        out["tuned"] = self.job.tuned
        out["variant"] = self.job.variant
        return out

    def timings(self) -> dict[str, float]:
        return {"ttft_ms": round(self.ttft_ms, 2), "total_ms": round(self.total_ms, 2)}


@dataclass(slots=True)
class Prepaid:
    """Tokens reserved up front for a request that runs several jobs (the summarize preset's
    map stages): its jobs draw on this reservation instead of each reserving, and `settle`
    replaces it with what they used."""

    tokens: int
    used: int = 0
    release: Callable[[int], Awaitable[None]] | None = None

    async def settle(self) -> None:
        """Settle the reservation with the tokens used (once; later calls do nothing)."""
        release, self.release = self.release, None
        if release is not None:
            await release(self.used)


class JobHook:
    """Sees every job the service runs. Subclass and override what you need; hooks run in
    order. `on_start` may refuse a job by raising an `AppError` (quotas) or add metadata."""

    async def on_start(self, job: Job) -> None:
        return None

    async def on_finish(self, outcome: Outcome) -> None:
        """After a completion, or a stream's end (`outcome.aborted` when it was cut short)."""
        return None

    async def on_error(self, job: Job, exc: BaseException) -> None:
        """When the job failed before producing an outcome."""
        return None

    async def prepay(self, ctx: RequestContext, tokens: int) -> Prepaid | None:
        """Reserve `tokens` for a request's several jobs before any of them starts (a hook that
        keeps limits may refuse here); None when this hook keeps no reservation."""
        return None


class Runner(Protocol):
    """Runs a planned job against a provider. Policies (privacy, cache, retries and fallbacks)
    wrap one another as runners; a runner may update the job (the model that served it,
    `metadata`)."""

    async def complete(self, job: Job) -> Completion: ...

    def stream(self, job: Job) -> AsyncGenerator[Chunk, None]: ...


class DirectRunner:
    """Calls the job's provider, with no policy around it."""

    async def complete(self, job: Job) -> Completion:
        return await job.provider.complete(job.request)

    def stream(self, job: Job) -> AsyncGenerator[Chunk, None]:
        return job.provider.stream(job.request)


class GenerationService:
    """Plans and runs generations against the configured providers."""

    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        hooks: Sequence[JobHook] = (),
        runner: Runner | None = None,
        clocks: Clocks | None = None,
    ) -> None:
        self._settings = settings
        self.clocks = clocks or Clocks()
        self._providers = providers
        self._table = settings.model_table
        self.hooks: list[JobHook] = list(hooks)
        self.runner: Runner = runner or DirectRunner()

    # -- planning ----------------------------------------------------------------------------

    @property
    def max_prompt_chars(self) -> int:
        return self._settings.max_prompt_chars

    @property
    def model_table(self) -> dict[str, ModelRoute]:
        return self._table

    def resolve(self, model: str | None) -> tuple[str, ModelRoute, Provider]:
        name = model or self._settings.default_model_name
        route = self._table.get(name)
        if route is None and name in self._settings.embedding_table:
            raise InvalidRequest(
                f"The model '{name}' is an embedding model, not a generation model: send it to "
                "POST /v1/embeddings.",
                param="model",
                code="model_not_supported",
            )
        if route is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist; GET /v1/models lists the available ones.",
                param="model",
            )
        return name, route, self._providers[route.provider]

    def default_max_tokens(self, route: ModelRoute) -> int:
        default = (
            self._settings.local_default_max_tokens
            if route.provider == "local"
            else self._settings.default_max_tokens
        )
        return min(default, route.max_output_tokens)

    def plan(self, ctx: RequestContext, spec: GenerationSpec) -> Job:
        """Resolve everything the generation `spec` needs, for the request `ctx`."""
        messages, overrides, text_param = list(spec.messages), spec.overrides, spec.text_param
        prompt, continue_from, tools = spec.prompt, spec.continue_from, spec.tools
        name, route, provider = self.resolve(spec.model)
        if prompt is not None:
            check_prompt_chars(
                [Message("user", prompt)], self._settings.max_prompt_chars, [text_param or "prompt"]
            )
        check_prompt_chars(messages, self._settings.max_prompt_chars, spec.message_params)
        if continue_from is not None:
            prompt = self._continuation(name, route, provider, tuple(messages), continue_from)
            messages = []
        extra = dict(spec.extra or {})
        check_extra_params(provider, name, extra)
        extra = apply_upstream_terms(name, route, extra)
        merged: dict[str, Any] = {**(spec.defaults or {}), **overrides}
        if prompt is not None and messages:
            raise ValueError("a generation continues either messages or a raw prompt, not both")
        messages_t = tuple(messages)
        text = messages_t if prompt is None else (Message("user", prompt),)
        check_images(name, route, messages_t)
        check_max_tokens(name, route, merged.get("max_tokens"))
        # Tool definitions are part of the prompt the model reads: they count like a system turn.
        max_tokens, prompt_tokens = self._fit_context(
            name,
            route,
            provider,
            (*text, *tool_messages(tools)),
            merged.get("max_tokens"),
            explicit="max_tokens" in overrides,
            text_param=text_param or ("messages" if prompt is None else "prompt"),
        )
        seed = merged.get("seed")
        request = GenerationRequest(
            model=route.upstream_model or name,
            messages=messages_t,
            sampling=self._settle_sampling(merged, max_tokens),
            extra=extra,
            user=spec.user,
            prompt=prompt,
            tools=tuple(tools),
            tool_choice=spec.tool_choice,
            parallel_tool_calls=spec.parallel_tool_calls,
            logprobs=spec.logprobs,
        )
        return Job(
            id=f"{spec.id_prefix}-{uuid.uuid4().hex}",
            endpoint=spec.endpoint,
            ctx=ctx,
            model=name,
            route=route,
            provider=provider,
            request=request,
            seed_fixed=seed is not None,
            prompt_tokens=prompt_tokens,
            prefix=continue_from,
            created=self.clocks.unix(),
            end_user=spec.user,
            safety_identifier=spec.safety_identifier,
        )

    def continuation_unsupported(self, model: str) -> str | None:
        """Why `continue_from` cannot be used with `model`, or None when it can."""
        name, _, provider = self.resolve(model)
        if isinstance(provider, ShowsChatText):
            return None
        return (
            f"Model '{name}' is served by the '{provider.name}' provider, which continues only whole "
            "chat turns: the text its model reads is not known here, so an answer cannot be resumed "
            "from inside exactly. Branching works on the embedded model; on an upstream route with "
            "`completions: true`, continue your own raw text with POST /v1/completions."
        )

    def _continuation(
        self, name: str, route: ModelRoute, provider: Provider, messages: tuple[Message, ...], prefix: str
    ) -> str:
        """The raw text that resumes the answer to `messages` after `prefix`."""
        text = None
        if isinstance(provider, ShowsChatText):
            text = provider.chat_text(route.upstream_model or name, messages)
        if text is None:
            raise UnsupportedParameter(
                self.continuation_unsupported(name)
                or f"The chat template of model '{name}' is not known, so it cannot be continued.",
                param="continue_from",
            )
        return text + prefix

    def _fit_context(
        self,
        name: str,
        route: ModelRoute,
        provider: Provider,
        messages: tuple[Message, ...],
        max_tokens: int | None,
        *,
        explicit: bool,
        text_param: str = "messages",
    ) -> tuple[int, int | None]:
        """The reply's `max_tokens` in the room the prompt leaves, and the prompt's token count
        when it had to be counted. An explicit `max_tokens` that does not fit is refused; a
        default one shrinks to fit."""
        wanted = max_tokens if max_tokens is not None else self.default_max_tokens(route)
        bound = tokens_at_most(messages)
        prompt_tokens: int | None
        if bound + wanted <= route.context_window:
            # It fits whatever the tokenizer says: counting exactly is left to whoever needs
            # the number (token limits), and a tokenizer is never loaded just to learn this.
            prompt_tokens, room = None, route.context_window - bound
        else:
            prompt_tokens = provider.count_tokens(route.upstream_model or name, messages)
            room = route.context_window - prompt_tokens
        if room < 1:
            raise InvalidRequest(
                f"The prompt is about {prompt_tokens} tokens, more than model '{name}' can take "
                f"({route.context_window} tokens of context).",
                param=text_param,
                code="context_length_exceeded",
            )
        if max_tokens is None:
            return max(1, min(self.default_max_tokens(route), room)), prompt_tokens
        if explicit and max_tokens > room:
            raise InvalidRequest(
                f"The prompt (about {prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds "
                f"model '{name}''s context of {route.context_window} tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return min(max_tokens, room), prompt_tokens

    def _settle_sampling(self, merged: Mapping[str, Any], max_tokens: int) -> Sampling:
        """Every sampling field resolved: the request's, a preset's, else the service's default."""
        stop = merged.get("stop")
        seed = merged.get("seed")
        return Sampling(
            temperature=_pick(merged, "temperature", self._settings.default_temperature),
            top_p=_pick(merged, "top_p", self._settings.default_top_p),
            max_tokens=max_tokens,
            n=_pick(merged, "n", 1),
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            # A seed is always chosen and reported, so that any answer can be reproduced.
            seed=seed if seed is not None else secrets.randbits(31),
            presence_penalty=_pick(merged, "presence_penalty", 0.0),
            frequency_penalty=_pick(merged, "frequency_penalty", 0.0),
        )

    # -- running -----------------------------------------------------------------------------

    async def prepay(self, ctx: RequestContext, tokens: int) -> Prepaid:
        """Reserve `tokens` up front for jobs that will carry the returned `Prepaid`."""
        for hook in self.hooks:
            prepaid = await hook.prepay(ctx, tokens)
            if prepaid is not None:
                return prepaid
        return Prepaid(tokens)

    async def complete(self, job: Job) -> Outcome:
        await self._start(job)
        started = time.perf_counter()
        created = job.created
        try:
            completion = await self.runner.complete(job)
        except BaseException as exc:
            await self._failed(job, exc)
            raise
        elapsed = (time.perf_counter() - started) * 1000
        ttft = completion.ttft_ms if completion.ttft_ms is not None else elapsed
        outcome = Outcome(job=job, completion=completion, created=created, ttft_ms=ttft, total_ms=elapsed)
        for hook in self.hooks:
            await hook.on_finish(outcome)
        return outcome

    async def run(self, job: Job, work: Callable[[Job], Awaitable[Completion]]) -> Outcome:
        """Run a job whose work is not a generation by the runner (an embedding): the hooks see
        it like any other job (keys, limits, usage and cost, metrics, its record), and `work`
        returns what it produced as a `Completion` (its usage; no choices)."""
        await self._start(job)
        started = time.perf_counter()
        try:
            completion = await work(job)
        except BaseException as exc:
            await self._failed(job, exc)
            raise
        elapsed = (time.perf_counter() - started) * 1000
        outcome = Outcome(
            job=job, completion=completion, created=job.created, ttft_ms=elapsed, total_ms=elapsed
        )
        await self._finished(outcome)
        return outcome

    async def stream(self, job: Job) -> AsyncGenerator[Chunk | Outcome, None]:
        """Yield the provider's text chunks, then one `Outcome` with the assembled result.
        A stream cut short still reaches the hooks, as an aborted outcome: never free."""
        await self._start(job)
        started = time.perf_counter()
        created = job.created
        ttft: float | None = None
        parts = CompletionAssembler(logprobs=job.request.logprobs is not None)
        done = False
        error: BaseException | None = None
        try:
            async with aclosing(self.runner.stream(job)) as chunks:
                async for chunk in chunks:
                    parts.add(chunk)
                    if chunk.usage is not None:
                        continue
                    if (chunk.text or chunk.tool_calls) and ttft is None:
                        ttft = (time.perf_counter() - started) * 1000
                    yield chunk
            done = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not done and parts.produced == 0 and parts.usage is None:
                # Nothing was generated: a plain failure (or a client gone before any text).
                await asyncio.shield(self._failed(job, error))
            else:
                total = (time.perf_counter() - started) * 1000
                usage = parts.usage
                if usage is None:
                    # Cut short: bill the prompt and what was produced (one chunk ≈ one token).
                    prompt = job.provider.count_tokens(job.request.model, prompt_messages(job.request))
                    usage = Usage(prompt, parts.produced)
                outcome = Outcome(
                    job=job,
                    completion=parts.completion(
                        job.request.model, job.request.sampling.n, usage=usage, seed=job.request.sampling.seed
                    ),
                    created=created,
                    ttft_ms=ttft if ttft is not None else total,
                    total_ms=total,
                    aborted=not done,
                )
                await asyncio.shield(self._finished(outcome))
                if done:
                    yield outcome

    async def _start(self, job: Job) -> None:
        """Run every `on_start`; when one refuses the job, the hooks already started hear of it
        through `on_error` (so that, e.g., a quota reservation is released)."""
        started: list[JobHook] = []
        try:
            for hook in self.hooks:
                await hook.on_start(job)
                started.append(hook)
        except BaseException as exc:
            for hook in reversed(started):
                await asyncio.shield(hook.on_error(job, exc))
            raise

    async def _finished(self, outcome: Outcome) -> None:
        for hook in self.hooks:
            await hook.on_finish(outcome)

    async def _failed(self, job: Job, exc: BaseException | None) -> None:
        for hook in self.hooks:
            await hook.on_error(job, exc if exc is not None else asyncio.CancelledError())


#: Chat framing (role, separators, reply priming) costs every tokenizer here a few tokens per
#: message; these bound it generously.
_FRAMING_PER_MESSAGE = 8
_FRAMING_BASE = 8


def tokens_at_most(messages: tuple[Message, ...]) -> int:
    """An upper bound on any provider's `count_tokens`: a byte-level BPE token covers at least
    one UTF-8 byte (SentencePiece adds at most a leading space), plus the framing above."""
    return _FRAMING_BASE + sum(
        len(m.content.encode())
        + _FRAMING_PER_MESSAGE
        + sum(len(c.name.encode()) + len(c.arguments.encode()) + _FRAMING_PER_MESSAGE for c in m.tool_calls)
        for m in messages
    )


def check_prompt_chars(messages: Sequence[Message], limit: int, params: Sequence[str] | None = None) -> None:
    """Refuse a message longer than the operator's `max_prompt_chars`."""
    for i, message in enumerate(messages):
        if len(message.content) > limit:
            raise InvalidRequest(
                f"A message is {len(message.content)} characters long; this service accepts at most "
                f"{limit} characters per message.",
                param=params[i] if params is not None else f"messages[{i}].content",
                code="prompt_too_long",
            )


UPSTREAM_TERMS = ("store", "service_tier")
"""Parameters that change the operator's terms with the upstream (retention, billing tier)."""


def apply_upstream_terms(model: str, route: ModelRoute, extra: dict[str, Any]) -> dict[str, Any]:
    """The route's `store` and `service_tier`; a client's own value only where the route allows it."""
    for param in UPSTREAM_TERMS:
        if param in extra and param not in route.client_params:
            raise InvalidRequest(
                f"The parameter '{param}' is set by this service's operator for model '{model}'; "
                "clients may not change it.",
                param=param,
                code="parameter_not_allowed",
            )
        operator_value = getattr(route, param)
        if param not in extra and operator_value is not None:
            extra[param] = operator_value
    return extra


def check_extra_params(provider: Provider, model: str, extra: Mapping[str, Any]) -> None:
    """Refuse a parameter the model's provider cannot honour, rather than drop it silently."""
    for param in extra:
        if param not in provider.extra_params:
            raise UnsupportedParameter(
                f"The parameter '{param}' is not supported by the '{provider.name}' provider "
                f"serving model '{model}'.",
                param=param,
            )


def check_images(model: str, route: ModelRoute, messages: tuple[Message, ...]) -> None:
    """Image parts go only to a route marked vision-capable; elsewhere the part is named."""
    if route.vision:
        return
    for image in (image for m in messages for image in m.images):
        raise InvalidRequest(
            f"Model '{model}' does not read images; send image parts only to a vision-capable model.",
            param=image.param or "messages",
            code="image_not_supported",
        )


def check_max_tokens(
    model: str, route: ModelRoute, max_tokens: int | None, param: str = "max_tokens"
) -> None:
    """Refuse a `max_tokens` beyond what the model can generate at all."""
    if max_tokens is not None and max_tokens > route.max_output_tokens:
        raise InvalidRequest(
            f"max_tokens is too large: model '{model}' generates at most {route.max_output_tokens} tokens.",
            param=param,
        )


def _pick(values: Mapping[str, Any], name: str, default: Any) -> Any:
    value = values.get(name)
    return default if value is None else value
