"""The OpenAI provider: one shared `openai.AsyncOpenAI` reaching OpenAI or any compatible backend.

This is the only module that imports `openai`; SDK exceptions become the project's errors here.
"""

from __future__ import annotations

import array
import base64
import binascii
import email.utils
import math
import re
import socket
import ssl
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from functools import cached_property
from typing import Any, cast

import anyio
import httpx2
import openai
import orjson
import tiktoken

from app.errors import (
    AppError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from app.providers.base import (
    Choice,
    Chunk,
    Completion,
    Embeddings,
    EmbedKind,
    FinishReason,
    GenerationRequest,
    Message,
    Priority,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolChoiceNamed,
    TopLogprob,
    Usage,
    prompt_messages,
)
from app.settings import EmbeddingRoute, Settings

_FINISH_REASONS: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    None: "stop",
}
_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-*]{4,}|Bearer\s+\S+)")

#: Parameters passed through to an OpenAI-compatible upstream untouched.
PASSTHROUGH_PARAMS = frozenset(
    {"logit_bias", "response_format", "reasoning_effort", "service_tier", "metadata", "store"}
)


#: What `chat.completions.create` sends besides the body. Requests go through the client's own
#: `post` (auth, timeouts and status errors as usual; its retries off) with the body encoded once
#: by orjson and handed over as raw `content`: the SDK's recursive transform of TypedDict params
#: cost ~16% of the service's CPU, and its standard-library JSON encoding of the dict more; answers
#: come back as raw bytes, parsed once with orjson.
_REQUEST_OPTIONS: Any = {"security": {"bearer_auth": True}}
_TRANSPORT_TIMEOUTS = (httpx2.TimeoutException,)
_TRANSPORT_ERRORS = (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream)


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data` of each server-sent event in a byte stream (comments and other fields are
    skipped; multi-line data is joined with newlines, as the SSE specification says)."""
    buf = b""
    async for piece in chunks:
        buf = buf + piece if buf else piece
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                continue  # a CRLF may be split across reads
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pos = 0
        while (end := buf.find(b"\n\n", pos)) != -1:
            block = buf[pos:end]
            pos = end + 2
            if block.startswith(b"data:") and b"\n" not in block:
                yield block[5:].removeprefix(b" ")
                continue
            data = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if data:
                yield b"\n".join(data)
        buf = buf[pos:]


def _choice_text(choice: dict[str, Any]) -> str:
    """A finished choice's text: a chat message's content, or a legacy completion's text."""
    if "message" in choice:
        return (choice["message"] or {}).get("content") or ""
    return choice.get("text") or ""


def _delta_text(choice: dict[str, Any]) -> str:
    """A streamed choice's new text: a chat delta's content, or a legacy completion's text."""
    if "delta" in choice:
        delta = choice["delta"]
        return (delta.get("content") or "") if delta else ""
    return choice.get("text") or ""


def _scrub(text: str) -> str:
    """Upstream messages may quote the key they were sent; never pass it on."""
    return _SECRET.sub("[redacted]", text)


def _upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return _scrub(inner["message"])
    return _scrub(exc.message)


def _retry_after(exc: openai.APIStatusError, wall: Callable[[], float] = time.time) -> float | None:
    """Seconds the upstream asks us to wait: `retry-after-ms` (OpenAI's), or `retry-after` in
    seconds or as an HTTP date."""
    headers = exc.response.headers
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - wall())
    except (ValueError, TypeError):
        return None


def _refused(exc: BaseException) -> bool:
    """Whether a connection failure was a refusal or an unknown host, not a timeout. The SDK's
    aiohttp transport reports a refused connection as `ConnectTimeout` (hence APITimeoutError);
    the real cause is further down the chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | socket.gaierror):
            return True
        current = current.__cause__ or current.__context__
    return False


def translate_error(exc: openai.OpenAIError) -> AppError:
    """Map an SDK exception to the error the client of this service should see."""
    if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
        return UpstreamTimeout("The upstream model did not answer in time.", transient=True)
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(
            "Could not connect to the upstream model.", code="upstream_unreachable", transient=True
        )
    if isinstance(exc, openai.RateLimitError):
        retry_after = _retry_after(exc)
        return RateLimited(
            f"The upstream model is rate limited: {_upstream_message(exc)}",
            retry_after=1.0 if retry_after is None else retry_after,
            code="upstream_rate_limited",
            transient=True,
        )
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        param = exc.body.get("param") if isinstance(exc.body, dict) else None
        return InvalidRequest(
            f"The upstream model refused the request: {_upstream_message(exc)}",
            param=param if isinstance(param, str) else None,
            code="upstream_bad_request",
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return UpstreamError(
            "The upstream model refused this service's credentials.", code="upstream_auth_failed"
        )
    if isinstance(exc, openai.APIStatusError):
        return UpstreamError(
            f"The upstream model failed with HTTP {exc.status_code}.",
            code="upstream_error",
            retry_after=_retry_after(exc),
            transient=exc.status_code >= 500 or exc.status_code in (408, 409),
        )
    return UpstreamError(
        "The upstream model returned an unusable answer.", code="upstream_bad_response", transient=True
    )


class OpenAIProvider:
    """Chat completions through the official SDK, against `settings.openai_base_url`."""

    name = "openai"
    extra_params = PASSTHROUGH_PARAMS

    def __init__(self, settings: Settings, http_client: Any | None = None) -> None:
        if http_client is None and settings.openai_http_transport == "aiohttp":
            http_client = openai.DefaultAioHttpClient()
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        self._client = openai.AsyncOpenAI(
            # Local servers (Ollama, llama.cpp, vLLM) need no key, but the SDK insists on one.
            api_key=api_key or "unused",
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout,
            # The service owns retries (app/services/gateway/resilience.py): one budget and one deadline
            # per request across fallbacks, counted in metrics. SDK retries would multiply them.
            max_retries=0,
            http_client=http_client,
        )
        self._encoding_name = settings.openai_tokenizer
        self._completions_models = frozenset(
            route.upstream_model or name
            for name, route in settings.model_table.items()
            if route.provider == "openai" and route.completions
        )
        """Upstream models whose routes say they serve legacy `/completions`."""

    @cached_property
    def _encoding(self) -> tiktoken.Encoding:
        encoding = tiktoken.get_encoding(self._encoding_name)
        # Counting runs in tiktoken's Rust core; the Python copy of the merge ranks (100k bytes
        # keys, ~9 MB for cl100k) is kept only to pickle the encoding, which nothing here does.
        encoding._mergeable_ranks = {}
        return encoding

    def _endpoint(self, request: GenerationRequest) -> str:
        """`/completions` for a raw prompt when the model's route serves it; else chat, where a
        raw prompt goes as one user message."""
        if request.prompt is not None and request.model in self._completions_models:
            return "/completions"
        return "/chat/completions"

    def _arguments(self, request: GenerationRequest, endpoint: str) -> dict[str, Any]:
        s = request.sampling
        text: dict[str, Any]
        if endpoint == "/completions":
            text = {"prompt": request.prompt}
        else:
            text = {"messages": [_wire_message(m) for m in request.as_messages()]}
        args: dict[str, Any] = {
            "model": request.model,
            **text,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "n": s.n,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
        }
        if s.stop:
            args["stop"] = list(s.stop)
        if s.seed is not None:
            args["seed"] = s.seed
        if request.user is not None:
            args["user"] = request.user
        if request.tools:
            args["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        **({"description": t.description} if t.description is not None else {}),
                        "parameters": dict(t.parameters),
                    },
                }
                for t in request.tools
            ]
            choice = request.tool_choice
            args["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if isinstance(choice, ToolChoiceNamed)
                else choice
            )
            if not request.parallel_tool_calls:
                # Sent only when off: some compatible servers reject the field altogether.
                args["parallel_tool_calls"] = False
        if request.logprobs is not None and endpoint == "/completions":
            args["logprobs"] = request.logprobs  # the legacy API's: how many alternatives
        elif request.logprobs is not None:
            args["logprobs"] = True
            if request.logprobs:
                args["top_logprobs"] = request.logprobs
        args.update(request.extra)
        return args

    async def complete(self, request: GenerationRequest) -> Completion:
        endpoint = self._endpoint(request)
        try:
            response = await self._client.post(
                endpoint,
                cast_to=httpx2.Response,
                content=orjson.dumps(self._arguments(request, endpoint)),
                options=_REQUEST_OPTIONS,
            )
            data = orjson.loads(response.content)
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                "The upstream model returned malformed JSON.", code="upstream_bad_response", transient=True
            ) from exc
        try:
            choices = tuple(
                Choice(
                    index=int(c.get("index", i)),
                    text=_choice_text(c),
                    finish_reason=_FINISH_REASONS.get(c.get("finish_reason"), "stop"),
                    tool_calls=_tool_calls((c.get("message") or {}).get("tool_calls")),
                    logprobs=_logprobs(c.get("logprobs"), request.logprobs),
                )
                for i, c in enumerate(data["choices"])
            )
            usage = data.get("usage") or {}
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UpstreamError(
                "The upstream model returned an unexpected answer.",
                code="upstream_bad_response",
                transient=True,
            ) from exc
        if not isinstance(prompt_tokens, int):
            prompt_tokens = self.count_tokens(request.model, prompt_messages(request))
        if not isinstance(completion_tokens, int):
            completion_tokens = sum(self._count_text(c.text) for c in choices)
        return Completion(
            model=str(data.get("model") or request.model),
            choices=choices,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            seed=request.sampling.seed,
        )

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        endpoint = self._endpoint(request)
        args = self._arguments(request, endpoint)
        args["stream"] = True
        args["stream_options"] = {"include_usage": True}
        usage: Usage | None = None
        produced: dict[int, list[str]] = {}
        try:
            response = cast(
                httpx2.Response,
                await self._client.post(
                    endpoint,
                    cast_to=httpx2.Response,
                    content=orjson.dumps(args),
                    options=_REQUEST_OPTIONS,
                    stream=True,
                ),
            )
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        try:
            # Raw SSE bytes parsed with orjson: the SDK's per-chunk pydantic models cost more
            # than everything else a streamed chunk goes through.
            chunks = response.aiter_bytes()
            async for data in sse_data(chunks):
                if data.startswith(b"[DONE]"):
                    async for _ in chunks:  # drain, so the connection goes back to the pool
                        pass
                    break
                event = orjson.loads(data)
                if event.get("error"):
                    error = event["error"]
                    message = error.get("message") if isinstance(error, dict) else None
                    raise openai.APIError(
                        message
                        if isinstance(message, str) and message
                        else "An error occurred during streaming",
                        response.request,
                        body=error,
                    )
                if event.get("usage"):
                    u = event["usage"]
                    usage = Usage(u["prompt_tokens"], u["completion_tokens"])
                for c in event.get("choices") or ():
                    delta = c.get("delta")
                    text = _delta_text(c)
                    reason = c.get("finish_reason")
                    finish = _FINISH_REASONS.get(reason) if reason else None
                    index = c.get("index", 0)
                    calls = _tool_call_deltas(delta.get("tool_calls")) if delta else ()
                    logprobs = _logprobs(c.get("logprobs"), request.logprobs)
                    if text:
                        produced.setdefault(index, []).append(text)
                    for call in calls:
                        produced.setdefault(index, []).append((call.name or "") + call.arguments)
                    if text or finish or calls or logprobs:
                        yield Chunk(
                            index=index,
                            text=text,
                            finish_reason=finish,
                            tool_calls=calls,
                            logprobs=logprobs,
                        )
        except _TRANSPORT_TIMEOUTS as exc:
            raise translate_error(openai.APITimeoutError(request=response.request)) from exc
        except _TRANSPORT_ERRORS as exc:
            raise translate_error(openai.APIConnectionError(request=response.request)) from exc
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(
                "The upstream stream was malformed.", code="upstream_bad_response", transient=True
            ) from exc
        finally:
            await response.aclose()
        if usage is None:
            # Backends that ignore `stream_options` report no usage: count it ourselves.
            usage = Usage(
                self.count_tokens(request.model, prompt_messages(request)),
                sum(self._count_text("".join(parts)) for parts in produced.values()),
            )
        yield Chunk(index=0, usage=usage)

    async def ready(self) -> bool:
        return True

    def _count_text(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def count_tokens(self, model: str, messages: tuple[Message, ...]) -> int:
        # OpenAI's chat format costs about 3 tokens per message plus 3 to prime the reply; a
        # tool call about 3 more around its name and arguments.
        return 3 + sum(
            4
            + self._count_text(m.content)
            + sum(3 + self._count_text(c.name) + self._count_text(c.arguments) for c in m.tool_calls)
            for m in messages
        )

    async def aclose(self) -> None:
        await self._client.close()


def _wire_message(m: Message) -> dict[str, Any]:
    """One of our messages in OpenAI's request shape."""
    out: dict[str, Any] = {"role": m.role}
    if m.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        for image in m.images:
            url: dict[str, Any] = {"url": image.url}
            if image.detail is not None:
                url["detail"] = image.detail
            parts.append({"type": "image_url", "image_url": url})
        out["content"] = parts
    else:
        # An assistant turn that only calls tools has no text: OpenAI expects null there.
        out["content"] = m.content if m.content or not m.tool_calls else None
    if m.name is not None and m.role != "tool":  # OpenAI's tool messages have no name
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    """`message.tool_calls` of an answer (function calls only)."""
    if not raw:
        return ()
    return tuple(
        ToolCall(id=str(c["id"]), name=str(c["function"]["name"]), arguments=str(c["function"]["arguments"]))
        for c in raw
        if c.get("type", "function") == "function"
    )


def _tool_call_deltas(raw: Any) -> tuple[ToolCallDelta, ...]:
    """`delta.tool_calls` of a streamed chunk."""
    if not raw:
        return ()
    out = []
    for c in raw:
        function = c.get("function") or {}
        out.append(
            ToolCallDelta(
                index=int(c.get("index", 0)),
                id=c.get("id") or None,
                name=function.get("name") or None,
                arguments=function.get("arguments") or "",
            )
        )
    return tuple(out)


def _token_bytes(raw: Any) -> tuple[int, ...] | None:
    return tuple(int(b) for b in raw) if isinstance(raw, list) else None


def _legacy_logprobs(raw: dict[str, Any]) -> tuple[TokenLogprob, ...]:
    """The legacy `/completions` shape: parallel lists of tokens, their log probabilities and
    a {token: logprob} map of alternatives per token (the upstream already bounds it)."""
    tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
    return tuple(
        TokenLogprob(
            token=str(token),
            logprob=float(logprob),
            bytes=tuple(str(token).encode()),
            top=tuple(
                TopLogprob(token=str(t), logprob=float(lp), bytes=tuple(str(t).encode()))
                for t, lp in sorted((top or {}).items(), key=lambda kv: -kv[1])
            ),
        )
        for token, logprob, top in zip(raw["tokens"], raw["token_logprobs"], tops, strict=True)
        if logprob is not None
    )


def _logprobs(raw: Any, wanted: int | None) -> tuple[TokenLogprob, ...] | None:
    """`choice.logprobs.content` (or the legacy shape), when the request asked for it."""
    if wanted is not None and isinstance(raw, dict) and isinstance(raw.get("tokens"), list):
        return _legacy_logprobs(raw)
    if wanted is None or not isinstance(raw, dict) or not isinstance(raw.get("content"), list):
        return None
    return tuple(
        TokenLogprob(
            token=str(t["token"]),
            logprob=float(t["logprob"]),
            bytes=_token_bytes(t.get("bytes")),
            top=tuple(
                TopLogprob(
                    token=str(a["token"]), logprob=float(a["logprob"]), bytes=_token_bytes(a.get("bytes"))
                )
                for a in (t.get("top_logprobs") or ())[:wanted]
            ),
        )
        for t in raw["content"]
    )


def build(settings: Settings) -> OpenAIProvider:
    return OpenAIProvider(settings)


class OpenAIEmbedder:
    """An upstream's `/embeddings` through the official SDK: vectors asked for as base64
    (little-endian float32, a quarter of the JSON of floats) and decoded with the standard
    library's `array` (numpy is not a dependency of the upstream-only install); an upstream that
    answers floats anyway is read as it is. Vectors are re-normalised here, since not every
    compatible server's are."""

    def __init__(
        self, model: str, route: EmbeddingRoute, settings: Settings, http_client: Any | None = None
    ) -> None:
        self.model = model
        self.dimensions = route.dimensions
        self.max_input_tokens = route.max_input_tokens
        self._upstream_model = route.upstream_model or model
        if http_client is None and settings.openai_http_transport == "aiohttp":
            http_client = openai.DefaultAioHttpClient()
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout,
            # No resilience runner wraps an embedding call (there is no fallback model to try):
            # the SDK's own backoff, which honours Retry-After, retries it.
            max_retries=settings.upstream_max_retries,
            http_client=http_client,
        )
        self._encoding_name = settings.openai_tokenizer

    @cached_property
    def _encoding(self) -> tiktoken.Encoding:
        encoding = tiktoken.get_encoding(self._encoding_name)
        encoding._mergeable_ranks = {}
        return encoding

    def count_tokens(self, text: str) -> int:
        """The text's tokens in the configured tiktoken encoding (cl100k: OpenAI's embedding
        models' own); an estimate for other upstreams."""
        return len(self._encoding.encode(text, disallowed_special=()))

    async def embed(
        self, texts: Sequence[str], *, kind: EmbedKind = "passage", priority: Priority = "interactive"
    ) -> Embeddings:
        # `kind` and `priority` mean nothing upstream: OpenAI's models embed queries and passages
        # alike, and the upstream schedules its own work.
        if not texts:
            return Embeddings(vectors=[], prompt_tokens=0)
        try:
            response = await self._client.embeddings.create(
                model=self._upstream_model, input=list(texts), encoding_format="base64"
            )
        except openai.OpenAIError as exc:
            raise translate_error(exc) from exc
        try:
            rows = sorted(response.data, key=lambda d: d.index)
            if [d.index for d in rows] != list(range(len(texts))):
                raise ValueError("the upstream's embeddings do not match the inputs")
            vectors = [_vector(cast(object, d.embedding)) for d in rows]
        except (ValueError, TypeError, binascii.Error) as exc:
            raise UpstreamError(
                "The upstream model returned unusable embeddings.",
                code="upstream_bad_response",
                transient=True,
            ) from exc
        wrong = next((len(v) for v in vectors if len(v) != self.dimensions), None)
        if wrong is not None:
            raise UpstreamError(
                f"The upstream model returned vectors of {wrong} dimensions; this service's "
                f"route for '{self.model}' says {self.dimensions}.",
                code="upstream_bad_response",
            )
        usage = response.usage
        prompt_tokens = (
            usage.prompt_tokens if usage is not None and isinstance(usage.prompt_tokens, int) else None
        )
        if prompt_tokens is None:
            prompt_tokens = sum(self.count_tokens(t) for t in texts)
        return Embeddings(vectors=[_unit(v) for v in vectors], prompt_tokens=prompt_tokens)

    async def aclose(self) -> None:
        await self._client.close()


def _vector(raw: object) -> list[float]:
    """One embedding: base64 of little-endian float32, or a list of numbers."""
    if isinstance(raw, str):
        floats = array.array("f", base64.b64decode(raw, validate=True))  # ValueError unless 4n bytes
        if sys.byteorder == "big":
            floats.byteswap()
        return floats.tolist()
    if isinstance(raw, list) and raw and all(isinstance(x, int | float) for x in raw):
        return [float(x) for x in raw]
    raise ValueError("an embedding is neither base64 nor a list of numbers")


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def build_embedder(model: str, route: EmbeddingRoute, settings: Settings) -> OpenAIEmbedder:
    return OpenAIEmbedder(model, route, settings)


__all__ = ["OpenAIEmbedder", "OpenAIProvider", "build", "build_embedder", "translate_error"]
