"""Generation: resolve the model, settle the sampling settings, call the provider, time it.

Every endpoint (generate, chat, presets, conversations) plans a `Job` here and runs it with
`complete` or `stream`, so policies added later apply to all of them alike.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.errors import InvalidRequest, ModelNotFound, UnsupportedParameter
from app.providers.base import (
    CallAssembler,
    Choice,
    Chunk,
    Completion,
    FinishReason,
    GenerationRequest,
    Message,
    Provider,
    Sampling,
    ShowsChatText,
    TokenLogprob,
    ToolChoice,
    ToolSpec,
    Usage,
    prompt_messages,
    tool_messages,
)
from app.settings import ModelRoute, Settings


@dataclass(slots=True)
class Job:
    """One planned generation: which model, which provider, what to send, and why."""

    id: str
    endpoint: str
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
    prefix: str | None = None
    """The start of the answer the client gave (`continue_from`): the model continued after it,
    and the answer's text begins with it."""


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
    ) -> None:
        self._settings = settings
        self._providers = providers
        self._table = settings.model_table
        self.hooks: list[JobHook] = list(hooks)
        self.runner: Runner = runner or DirectRunner()

    # -- planning ----------------------------------------------------------------------------

    @property
    def model_table(self) -> dict[str, ModelRoute]:
        return self._table

    def resolve(self, model: str | None) -> tuple[str, ModelRoute, Provider]:
        name = model or self._settings.default_model_name
        route = self._table.get(name)
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

    def plan(
        self,
        *,
        endpoint: str,
        model: str | None,
        messages: list[Message],
        overrides: Mapping[str, Any],
        defaults: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        user: str | None = None,
        id_prefix: str = "gen",
        prompt: str | None = None,
        text_param: str | None = None,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
        logprobs: int | None = None,
        continue_from: str | None = None,
    ) -> Job:
        """Resolve everything a generation needs. `overrides` are the client's own sampling
        values and always win; `defaults` (a preset's or a tuning variant's) come next. With a
        `prompt` (and no messages) the model continues that raw text. `text_param` names the
        request field that held the text, for errors (`messages`, or `prompt`). With
        `continue_from`, the answer to `messages` resumes after that text (a branch)."""
        name, route, provider = self.resolve(model)
        if continue_from is not None:
            prompt = self._continuation(name, route, provider, tuple(messages), continue_from)
            messages = []
        extra = dict(extra or {})
        for param in extra:
            if param not in provider.extra_params:
                raise UnsupportedParameter(
                    f"The parameter '{param}' is not supported by the '{provider.name}' provider "
                    f"serving model '{name}'.",
                    param=param,
                )
        merged: dict[str, Any] = {**(defaults or {}), **overrides}
        if prompt is not None and messages:
            raise ValueError("a generation continues either messages or a raw prompt, not both")
        text_param = text_param or ("messages" if prompt is None else "prompt")
        messages_t = tuple(messages)
        if not route.vision:
            for image in (image for m in messages_t for image in m.images):
                raise InvalidRequest(
                    f"Model '{name}' does not read images; send image parts only to a vision-capable model.",
                    param=image.param or "messages",
                    code="image_not_supported",
                )
        max_tokens = merged.get("max_tokens")
        if max_tokens is not None and max_tokens > route.max_output_tokens:
            raise InvalidRequest(
                f"max_tokens is too large: model '{name}' generates at most "
                f"{route.max_output_tokens} tokens.",
                param="max_tokens",
            )
        wanted = max_tokens if max_tokens is not None else self.default_max_tokens(route)
        # Tool definitions are part of the prompt the model reads: they count like a system turn.
        counted = (*(messages_t if prompt is None else (Message("user", prompt),)), *tool_messages(tools))
        bound = tokens_at_most(counted)
        prompt_tokens: int | None
        if bound + wanted <= route.context_window:
            # It fits whatever the tokenizer says: counting exactly is left to whoever needs
            # the number (token limits), and a tokenizer is never loaded just to learn this.
            prompt_tokens, room = None, route.context_window - bound
        else:
            prompt_tokens = provider.count_tokens(route.upstream_model or name, counted)
            room = route.context_window - prompt_tokens
        if room < 1:
            raise InvalidRequest(
                f"The prompt is about {prompt_tokens} tokens, more than model '{name}' can take "
                f"({route.context_window} tokens of context).",
                param=text_param,
                code="context_length_exceeded",
            )
        if max_tokens is None:
            max_tokens = max(1, min(self.default_max_tokens(route), room))
        elif "max_tokens" in overrides and max_tokens > room:
            raise InvalidRequest(
                f"The prompt (about {prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds "
                f"model '{name}''s context of {route.context_window} tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        else:
            max_tokens = min(max_tokens, room)
        stop = merged.get("stop")
        seed = merged.get("seed")
        sampling = Sampling(
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
        request = GenerationRequest(
            model=route.upstream_model or name,
            messages=messages_t,
            sampling=sampling,
            extra=extra,
            user=user,
            prompt=prompt,
            tools=tuple(tools),
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            logprobs=logprobs,
        )
        return Job(
            id=f"{id_prefix}-{uuid.uuid4().hex}",
            endpoint=endpoint,
            model=name,
            route=route,
            provider=provider,
            request=request,
            seed_fixed=seed is not None,
            prompt_tokens=prompt_tokens,
            prefix=continue_from,
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

    # -- running -----------------------------------------------------------------------------

    async def complete(self, job: Job) -> Outcome:
        await self._start(job)
        started = time.perf_counter()
        created = int(time.time())
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

    async def stream(self, job: Job) -> AsyncGenerator[Chunk | Outcome, None]:
        """Yield the provider's text chunks, then one `Outcome` with the assembled result.
        A stream cut short still reaches the hooks, as an aborted outcome: never free."""
        await self._start(job)
        started = time.perf_counter()
        created = int(time.time())
        ttft: float | None = None
        texts: dict[int, list[str]] = {}
        finish: dict[int, FinishReason] = {}
        calls: dict[int, CallAssembler] = {}
        logprobs: dict[int, list[TokenLogprob]] = {}
        usage: Usage | None = None
        produced = 0
        done = False
        error: BaseException | None = None
        try:
            async with aclosing(self.runner.stream(job)) as chunks:
                async for chunk in chunks:
                    if chunk.usage is not None:
                        usage = chunk.usage
                        continue
                    if chunk.text or chunk.tool_calls:
                        if ttft is None:
                            ttft = (time.perf_counter() - started) * 1000
                        produced += 1
                        texts.setdefault(chunk.index, []).append(chunk.text)
                    if chunk.tool_calls:
                        calls.setdefault(chunk.index, CallAssembler()).add(chunk.tool_calls)
                    if chunk.logprobs:
                        logprobs.setdefault(chunk.index, []).extend(chunk.logprobs)
                    if chunk.finish_reason is not None:
                        finish[chunk.index] = chunk.finish_reason
                    yield chunk
            done = True
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not done and produced == 0 and usage is None:
                # Nothing was generated: a plain failure (or a client gone before any text).
                await asyncio.shield(self._failed(job, error))
            else:
                total = (time.perf_counter() - started) * 1000
                if usage is None:
                    # Cut short: bill the prompt and what was produced (one chunk ≈ one token).
                    prompt = job.provider.count_tokens(job.request.model, prompt_messages(job.request))
                    usage = Usage(prompt, produced)
                outcome = Outcome(
                    job=job,
                    completion=Completion(
                        model=job.request.model,
                        choices=tuple(
                            Choice(
                                index=i,
                                text="".join(texts.get(i, [])),
                                finish_reason=finish.get(i, "stop"),
                                tool_calls=calls[i].calls() if i in calls else (),
                                logprobs=tuple(logprobs.get(i, ()))
                                if job.request.logprobs is not None
                                else None,
                            )
                            for i in range(job.request.sampling.n)
                        ),
                        usage=usage,
                        seed=job.request.sampling.seed,
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


def _pick(values: Mapping[str, Any], name: str, default: Any) -> Any:
    value = values.get(name)
    return default if value is None else value
