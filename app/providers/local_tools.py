"""Tool calling and log probabilities for the embedded model: the prompt, the grammar, the parse.

A small model cannot be trusted to write a well-formed call on its own, so calls are produced by
constrained decoding: a llama.cpp grammar (GBNF) built from the tools' JSON Schemas admits only
`{"name": <one of the tools>, "arguments": <an object valid for that tool>}`.

- `required` and a named function: the grammar admits only a call (of that function, when
  named), so the answer is always a call whose arguments validate against the schema.
- `auto`: the grammar admits either a call or plain text that does not start with `{`; the
  model's first token decides, and a call, once begun, must be completed correctly.
- `none`: no grammar and the tools are not described to the model, which answers in text.
- A loop that finishes: once a tool's result is in the conversation, `auto` answers in text unless
  the model writes a complete call that differs from every call already answered. A repeated call,
  or one cut short by `max_tokens`, is discarded and that choice is sampled again under a grammar
  that admits only text, so an agent loop always ends with an answer.

When tools may be called, they are described in the system turn (appended to the client's own),
with the exact JSON form of a call. Earlier calls are replayed in that same JSON form as the
assistant's turn, and a tool's result becomes a user turn that names the tool (SmolLM2's chat
template knows only system, user and assistant turns). The embedded model makes at most one
call per turn, whatever `parallel_tool_calls` says.
"""

from __future__ import annotations

import codecs
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from app.providers.base import (
    GenerationRequest,
    Message,
    TokenLogprob,
    ToolCall,
    ToolChoiceNamed,
    ToolSpec,
    TopLogprob,
)

_TEXT_RULES = """
root ::= call | text
text ::= [^{] [^\\x00]*
"""


def calls_allowed(request: GenerationRequest) -> bool:
    return bool(request.tools) and request.tool_choice != "none"


def callable_tools(request: GenerationRequest) -> tuple[ToolSpec, ...]:
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceNamed):
        return tuple(t for t in request.tools if t.name == choice.name)
    return request.tools


#: Keywords the grammar enforces (or that only annotate); a schema using any other cannot be
#: guaranteed by constrained decoding, and is refused rather than quietly not honoured.
_ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "oneOf",
        "anyOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "format",
        "minLength",
        "maxLength",
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
    }
)
_MAX_ENUM_RANGE = 256


class UnenforceableSchema(ValueError):
    """A tool's schema uses a keyword the embedded model's grammar cannot enforce."""

    def __init__(self, keyword: str, where: str) -> None:
        super().__init__(f"'{keyword}' at {where or 'the top'} cannot be enforced by the embedded model")
        self.keyword = keyword


def enforceable(schema: Any, where: str = "") -> Any:
    """`schema` in the form the grammar converter enforces exactly: a bounded integer range
    becomes the enum of its values. Raises `UnenforceableSchema` for what it cannot enforce."""
    if isinstance(schema, list):
        return [enforceable(item, f"{where}/{i}") for i, item in enumerate(schema)]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    low, high = out.get("minimum"), out.get("maximum")
    if out.get("type") == "integer" and isinstance(low, int) and isinstance(high, int):
        if high - low > _MAX_ENUM_RANGE:
            raise UnenforceableSchema("maximum", where)
        out = {k: v for k, v in out.items() if k not in ("minimum", "maximum", "type")}
        out["enum"] = [v for v in range(low, high + 1) if v in out.get("enum", range(low, high + 1))]
    for key, value in list(out.items()):
        if key not in _ENFORCED:
            raise UnenforceableSchema(key, where)
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: enforceable(sub, f"{where}/{key}/{name}") for name, sub in value.items()}
        elif key in ("items", "prefixItems", "oneOf", "anyOf", "allOf", "additionalProperties"):
            out[key] = enforceable(value, f"{where}/{key}")
        elif key == "pattern" and not (str(value).startswith("^") and str(value).endswith("$")):
            out[key] = f"^{value}$" if not str(value).startswith("^") else f"{value}$"
    return out


def call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The JSON Schema of one call of any of `tools`."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                "arguments": enforceable(dict(tool.parameters)) or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return options[0] if len(options) == 1 else {"oneOf": options}


#: JSON's own rules for a character inside a string, in place of two of llama-cpp-python's
#: converter that admit what JSON forbids: its `char` takes raw control characters (a newline
#: written inside an argument left it unparseable) and a pattern's `.` (`dot`) takes `"` and `\`.
_JSON_STRING_RULES = {
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])',
    "dot": r'[^"\\\x7F\x00-\x1F]',
}


def json_grammar(schema: Mapping[str, Any], *, root: str = "root") -> str:
    """The GBNF of the JSON documents that `schema` admits, every string one JSON can parse;
    its top rule is named `root` (another name lets a grammar offer something beside it)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    rules = []
    for line in json_schema_to_gbnf(json.dumps(schema)).splitlines():
        name, sep, body = line.partition(" ::= ")
        if not sep:
            rules.append(line)
            continue
        if name in _JSON_STRING_RULES:
            body = _JSON_STRING_RULES[name]
        rules.append(f"{root if name == 'root' else name} ::= {body}")
    return "\n".join(rules)


TEXT_ONLY_GRAMMAR = "root ::= text\n" + _TEXT_RULES.split("\n", 2)[2]
"""Plain text that does not start with `{`: the second try of a turn whose call was refused."""


def call_key(name: str, arguments: str) -> tuple[str, str]:
    """What makes two calls the same call: the tool and its arguments as canonical JSON."""
    try:
        canonical = json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = arguments
    return name, canonical


def answered_calls(request: GenerationRequest) -> frozenset[tuple[str, str]]:
    """The calls of the conversation whose results it already holds."""
    results = {m.tool_call_id for m in request.messages if m.role == "tool"}
    return frozenset(
        call_key(c.name, c.arguments)
        for m in request.messages
        if m.role == "assistant"
        for c in m.tool_calls
        if c.id in results
    )


def continues_a_loop(request: GenerationRequest) -> bool:
    """`auto` after a tool's result: the turn where a small model tends to call again."""
    return request.tool_choice == "auto" and calls_allowed(request) and bool(answered_calls(request))


def tool_grammar(request: GenerationRequest) -> str | None:
    """The GBNF that shapes the answer, or None when the answer is free text."""
    if not calls_allowed(request):
        return None
    call = json_grammar(call_schema(callable_tools(request)), root="call")
    if request.tool_choice == "auto":
        return call + "\n" + _TEXT_RULES
    return call + "\nroot ::= call\n"


def _describe(tools: Sequence[ToolSpec], forced: bool) -> str:
    lines = [
        "You can call tools. To call one, reply with only a JSON object of the form "
        '{"name": <tool name>, "arguments": <arguments object>}.'
        + ("" if forced else " Otherwise answer in plain text."),
        "Tools:",
    ]
    for tool in tools:
        line = f"- {tool.name}"
        if tool.description:
            line += f": {tool.description}"
        lines.append(line)
        lines.append(f"  arguments: {json.dumps(dict(tool.parameters), separators=(',', ':'))}")
    return "\n".join(lines)


def render_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """The conversation as plain system/user/assistant turns for the model's chat template."""
    out: list[dict[str, str]] = []
    names: dict[str, str] = {}
    for m in request.messages:
        if m.role == "assistant" and m.tool_calls:
            calls = []
            for c in m.tool_calls:
                names[c.id] = c.name
                calls.append(_call_text(c))
            content = "\n".join([m.content, *calls] if m.content else calls)
            out.append({"role": "assistant", "content": content})
        elif m.role == "tool":
            name = names.get(m.tool_call_id or "", m.name or "the tool")
            out.append({"role": "user", "content": f"Result of {name}: {m.content}"})
        else:
            out.append({"role": m.role, "content": m.content})
    if calls_allowed(request):
        tools = _describe(callable_tools(request), forced=request.tool_choice != "auto")
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + tools}
        else:
            out.insert(0, {"role": "system", "content": tools})
    return out


def _call_text(call: ToolCall) -> str:
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments
    return json.dumps({"name": call.name, "arguments": arguments}, ensure_ascii=False)


def parse_call(text: str, tools: Sequence[ToolSpec]) -> ToolCall | None:
    """The call the model wrote, or None when `text` is not one (say, cut short by max_tokens)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("arguments"), dict):
        return None
    if data.get("name") not in {t.name for t in tools}:
        return None
    return ToolCall(
        id=new_call_id(),
        name=str(data["name"]),
        arguments=json.dumps(data["arguments"], ensure_ascii=False),
    )


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def message_text(m: Message) -> str:
    """What a message costs in the prompt, as text (its calls in the form the model sees)."""
    if not m.tool_calls:
        return m.content
    return "\n".join([m.content, *(_call_text(c) for c in m.tool_calls)])


# -- log probabilities ------------------------------------------------------------------------


class LogprobRecorder:
    """A llama.cpp logits processor that keeps, for every sampled token, its log probability and
    the `top` most likely alternatives. It sees the model's raw distribution (before penalties,
    grammar and temperature), as OpenAI reports it. The token sampled from one distribution is
    known at the next step; the last one is settled by `finish`."""

    def __init__(self, top: int, token_bytes: Callable[[int], bytes]) -> None:
        self._top = top
        self._token_bytes = token_bytes
        self._last: npt.NDArray[np.float32] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tokens: list[TokenLogprob] = []
        self.text_length = 0
        """Characters the recorded tokens add up to."""

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.float32]) -> Any:
        if self._last is not None:
            self._record(int(input_ids[-1]), self._last)
        peak = float(np.max(scores))
        self._last = scores - (peak + math.log(float(np.sum(np.exp(scores - peak)))))
        return scores

    def _record(self, token: int, logprobs: npt.NDArray[np.float32]) -> None:
        raw = self._token_bytes(token)
        text = self._decoder.decode(raw)
        top: tuple[TopLogprob, ...] = ()
        if self._top:
            best = np.argpartition(-logprobs, self._top)[: self._top]
            best = best[np.argsort(-logprobs[best])]
            top = tuple(self._top_entry(int(i), float(logprobs[i])) for i in best)
        self.tokens.append(TokenLogprob(text, float(logprobs[token]), tuple(raw), top))
        self.text_length += len(text)

    def _top_entry(self, token: int, logprob: float) -> TopLogprob:
        raw = self._token_bytes(token)
        return TopLogprob(raw.decode("utf-8", errors="replace"), logprob, tuple(raw))

    def finish(self, content: str, vocabulary: Callable[[], Sequence[bytes]]) -> None:
        """Settle the last token: if the text goes beyond the recorded tokens, the last sampled
        token wrote the rest (the likeliest token whose bytes begin with it)."""
        last, self._last = self._last, None
        missing = content[self.text_length :].encode()
        if last is None or not missing:
            return
        vocab = vocabulary()
        candidates = [i for i, b in enumerate(vocab) if b.startswith(missing)]
        if candidates:
            self._record(max(candidates, key=lambda i: float(last[i])), last)

    def take(self, length: int, *, last: bool = False) -> tuple[tuple[TokenLogprob, ...], int]:
        """The recorded tokens that make up at most `length` more characters of text, and how
        many characters they make. With `last`, the token that goes beyond is cut to fit (a stop
        sequence ended the text inside it) and the rest is dropped."""
        out: list[TokenLogprob] = []
        used = 0
        while self.tokens:
            token = self.tokens[0]
            if used + len(token.token) > length:
                if last and used < length:
                    out.append(replace(token, token=token.token[: length - used]))
                    used = length
                break
            out.append(self.tokens.pop(0))
            used += len(token.token)
        if last:
            self.tokens.clear()
        return tuple(out), used
