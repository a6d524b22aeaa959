"""Privacy: personal data is redacted from prompts before they leave for a model, and restored in
the answer — a runner step that fails closed.

Detected: e-mail addresses, Chinese resident ID numbers (checksum verified), payment card numbers
(Luhn verified), IPv4/IPv6 addresses, and phone numbers (mainland-China mobiles and landlines,
`+` international numbers, North American numbers). Each distinct value becomes a placeholder
such as `[EMAIL_1]`; the model's answer gets the values back, in streams too (a placeholder split
across chunks is held back until it is whole).

Modes: `off`; `redact`; `block` (a prompt with personal data is refused with 400). The mode is the
strictest of the `privacy_mode` setting, the job's preset and the request's `x-privacy-mode`
header, so neither a client nor a preset can switch off what the operator asked for. The response
`metadata.privacy` says the mode and how many items of each kind were redacted — never the values.
If redaction fails for any reason, the request is refused (503) rather than sent unredacted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import string
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Literal

import anyio
import re2

from app.errors import InvalidRequest, ServiceUnavailable
from app.providers.base import Chunk, Completion, GenerationRequest, Message, ToolCallDelta
from app.services.generation.context import PRIVACY_HEADER
from app.services.generation.pipeline import Job, Runner
from app.settings import Settings

log = logging.getLogger("genserve.privacy")

OFF_LOOP_CHARS = 32_768
"""Requests with more text than this are redacted on a worker thread, not on the event loop."""

PrivacyMode = Literal["off", "redact", "block"]
Kind = Literal["email", "id_number", "card", "ip", "phone"]

MODES: tuple[PrivacyMode, ...] = ("off", "redact", "block")
"""From the least to the most strict."""

_LABELS: dict[Kind, str] = {
    "email": "EMAIL",
    "id_number": "ID_NUMBER",
    "card": "CARD",
    "ip": "IP",
    "phone": "PHONE",
}
# Every pattern that sees a request's text runs on RE2, whose matching time is linear in the
# text's length whatever the text (Python's backtracking `re` took ~440 ms on 51 KB of `+` and
# digit runs). RE2 has no lookaround, so a detector's fences are spelled out instead: the value
# (group 1) is preceded by the start of the text or by a character outside `before`, and followed
# by the end of the text or by a character outside `after` (or one of the `ends`). Both fence
# characters are consumed, so `_scan` searches again from the end of the value: the character
# after one value can be the fence before the next. Digits are fenced rather than bounded by
# \b: in Unicode text a CJK character counts as a word character, so "号码13812345678" has no \b
# before the number. `\p{Nd}` is any decimal digit, as `\d` is in Python's str patterns.
_D = r"\p{Nd}"
_HEX = "0-9A-Fa-f"


def _pattern(core: str, *, before: str = "", after: str = "", ends: str = "") -> re2._Regexp:
    pre = f"(?:^|[^{before}])" if before else ""
    post = ends or (f"(?:$|[^{after}])" if after else "")
    return re2.compile(f"{pre}({core}){post}".encode())


_PLACEHOLDER = re2.compile(r"\[(?:EMAIL|ID_NUMBER|CARD|IP|PHONE)_[0-9]+\]")

_EMAIL = _pattern(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}",
    before="A-Za-z0-9._%+-",
)
_CN_ID = _pattern(
    rf"[1-9]{_D}{{5}}(?:18|19|20){_D}{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]{_D}|3[01]){_D}{{3}}[{_D}Xx]",
    before=_D,
    after=_D,
)
# Grouped card numbers use one separator throughout (what a backreference said before).
_CARD = _pattern(
    "|".join(
        [
            *(rf"{_D}{{4}}{s}{_D}{{4}}{s}{_D}{{4}}{s}{_D}{{1,7}}" for s in (" ", "-")),
            *(rf"{_D}{{4}}{s}{_D}{{6}}{s}{_D}{{4,5}}" for s in (" ", "-")),
            rf"{_D}{{13,19}}",
        ]
    ),
    before=_D,
    after=_D,
)
_OCTET = rf"(?:25[0-5]|2[0-4]{_D}|1{_D}{_D}|[1-9]?{_D})"
# Not followed by a digit, nor by a dot and a digit (a longer dotted number).
_IPV4 = _pattern(
    rf"(?:{_OCTET}\.){{3}}{_OCTET}",
    before=rf"{_D}.",
    ends=rf"(?:$|[^{_D}.]|\.$|\.[^{_D}])",
)
_IPV6 = _pattern(
    rf"(?:[{_HEX}]{{0,4}}:){{2,7}}(?:{_D}{{1,3}}(?:\.{_D}{{1,3}}){{3}}|[{_HEX}]{{0,4}})",
    before=f"{_HEX}:",
    after=f"{_HEX}:",
)
_PHONES = (
    # mainland-China mobile: 1[3-9]x xxxx xxxx, optionally +86 / 0086
    _pattern(rf"(?:(?:\+|00)86[ -]?)?1[3-9]{_D}(?:[ -]?{_D}{{4}}){{2}}", before=rf"{_D}+", after=_D),
    # mainland-China landline: 0xx-xxxxxxxx / 0xxx-xxxxxxx
    _pattern(rf"(?:\(0{_D}{{2,3}}\)|0{_D}{{2,3}}-){_D}{{7,8}}", before=rf"{_D}+", after=_D),
    # international: +country and 7 to 14 more digits, with the usual separators; not glued to
    # a word (a letter or digit of any script, `_`) or another `+`
    _pattern(rf"\+{_D}{{1,3}}(?:[ .-]?\(?{_D}{{1,4}}\)?){{2,5}}", before=r"\p{L}\p{N}_+", after=_D),
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671
    _pattern(
        rf"(?:\({_D}{{3}}\)[\s\p{{Z}}]?|{_D}{{3}}[.-]){_D}{{3}}[.-]{_D}{{4}}", before=rf"{_D}(", after=_D
    ),
)

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def valid_cn_id(number: str) -> bool:
    """GB 11643: the 18th character is a checksum of the first 17 digits."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


_DOUBLED = str.maketrans("0123456789", "0246813579")
"""Each digit doubled, less 9 when that is above 9 (Luhn's step for every second digit)."""


def luhn_valid(digits: str) -> bool:
    if not digits.isascii():  # digits of another script (e.g. full-width) count as theirs
        digits = "".join(str(int(ch)) for ch in digits)
    return (sum(map(int, digits[-1::-2])) + sum(map(int, digits[-2::-2].translate(_DOUBLED)))) % 10 == 0


def _valid_card(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _valid_ipv6(text: str) -> bool:
    if text.count(":") < 2 or not any(ch in string.hexdigits for ch in text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _valid_phone(text: str) -> bool:
    return 7 <= sum(ch.isdigit() for ch in text) <= 15


_DETECTORS: tuple[tuple[Kind, re2._Regexp, Callable[[str], bool] | None], ...] = (
    # Order matters: an e-mail may contain digits, an ID number could pass as a card number.
    ("email", _EMAIL, None),
    ("id_number", _CN_ID, valid_cn_id),
    ("card", _CARD, _valid_card),
    ("ip", _IPV6, _valid_ipv6),
    ("ip", _IPV4, None),
    *(("phone", pattern, _valid_phone) for pattern in _PHONES),
)


@dataclass(slots=True)
class Redaction:
    """The messages as sent upstream, and how to put the values back."""

    messages: tuple[Message, ...]
    values: dict[str, str] = field(default_factory=dict)
    """Placeholder → original value (kept in memory for this request only)."""
    counts: Counter[str] = field(default_factory=Counter)
    """Items redacted per kind."""

    def restore(self, text: str) -> str:
        if not self.values or "[" not in text:
            return text
        return str(_PLACEHOLDER.sub(lambda m: self.values.get(m.group(0), m.group(0)), text))

    def conceal(self, text: str) -> str:
        """The redacted form of `text`: each value found in the request, back to its placeholder
        (for text that is stored: the user's message, the restored answer)."""
        for placeholder, value in sorted(self.values.items(), key=lambda item: -len(item[1])):
            text = text.replace(value, placeholder)
        return text

    def restorer(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """Restores placeholders in a stream of text, holding back a tail that may be the start of
    a placeholder until the next piece says whether it is one."""

    def __init__(self, redaction: Redaction) -> None:
        self._redaction = redaction
        self._longest = max((len(p) for p in redaction.values), default=0)
        self._pending = ""

    def feed(self, text: str) -> str:
        text = self._redaction.restore(self._pending + text)
        self._pending = ""
        start = text.rfind("[", max(0, len(text) - self._longest))
        if start != -1:
            tail = text[start:]
            if any(p.startswith(tail) for p in self._redaction.values):
                self._pending = tail
                return text[:start]
        return text

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return text


class Redactor:
    """Finds personal data and replaces each distinct value with a numbered placeholder.

    Linear in the text's length: the patterns run on RE2, on the text's UTF-8 bytes (encoded
    once per message), and the placeholders the client wrote are gathered once, up front."""

    def redact(self, messages: Iterable[Message]) -> Redaction:
        messages = tuple(messages)
        written = {
            m.group(0)
            for text in [
                *(m.content for m in messages),
                *(c.arguments for m in messages for c in m.tool_calls),
            ]
            for m in _PLACEHOLDER.finditer(text)
        }
        redaction = Redaction(messages=())
        by_value: dict[tuple[Kind, str], bytes] = {}
        numbers: Counter[Kind] = Counter()

        def placeholder(kind: Kind, value: str) -> bytes:
            existing = by_value.get((kind, value))
            if existing is not None:
                return existing
            while True:
                numbers[kind] += 1
                candidate = f"[{_LABELS[kind]}_{numbers[kind]}]"
                if candidate not in written:  # never collide with text the client wrote
                    break
            by_value[(kind, value)] = candidate.encode()
            redaction.values[candidate] = value
            return by_value[(kind, value)]

        def scrub(text: str) -> str:
            data = text.encode()
            changed = False
            for kind, pattern, valid in _DETECTORS:
                data, found = _scan(data, kind, pattern, valid, placeholder)
                if found:
                    redaction.counts[kind] += found
                    changed = True
            return data.decode() if changed else text

        out = []
        for message in messages:
            # Tool results are `tool` messages' content; the arguments of earlier calls are
            # text the model wrote from the conversation, and as personal.
            text = scrub(message.content)
            calls = tuple(replace(c, arguments=scrub(c.arguments)) for c in message.tool_calls)
            if text != message.content or calls != message.tool_calls:
                message = replace(message, content=text, tool_calls=calls)
            out.append(message)
        redaction.messages = tuple(out)
        return redaction


def _scan(
    data: bytes,
    kind: Kind,
    pattern: re2._Regexp,
    valid: Callable[[str], bool] | None,
    placeholder: Callable[[Kind, str], bytes],
) -> tuple[bytes, int]:
    """Replace every valid match of `pattern`'s group 1; returns the text and how many."""
    pieces: list[bytes] = []
    pos = last = found = 0
    while (match := pattern.search(data, pos)) is not None:
        start, end = match.span(1)
        pos = end  # the fence after this value may be the fence before the next one
        value = data[start:end].decode()
        if valid is not None and not valid(value):
            continue
        pieces += (data[last:start], placeholder(kind, value))
        last = end
        found += 1
    if not found:
        return data, 0
    pieces.append(data[last:])
    return b"".join(pieces), found


def parse_mode(value: str | None) -> PrivacyMode | None:
    """A request's `x-privacy-mode` header: None when absent, 400 when not a mode."""
    if value is None:
        return None
    mode = value.strip().lower()
    if mode not in MODES:
        raise InvalidRequest(
            f"Invalid value for '{PRIVACY_HEADER}': expected one of off, redact, block.",
            param=PRIVACY_HEADER,
            code="invalid_value",
        )
    return mode


def strictest(*modes: PrivacyMode | None) -> PrivacyMode:
    return max((m for m in modes if m is not None), key=MODES.index, default="off")


class PrivacyGuard:
    """The runner step that redacts requests and restores answers, failing closed."""

    def __init__(
        self, settings: Settings, inner: Runner, redactor: Redactor | None = None, *, secret: bytes
    ) -> None:
        self.default_mode: PrivacyMode = settings.privacy_mode
        self._secret = secret
        """Keys the `user` pseudonyms (see `pseudonym`)."""
        self.inner = inner
        self.redactor = redactor or Redactor()
        self.redacted_total: Counter[str] = Counter()
        """Items redacted per kind since start (for metrics)."""
        self.blocked_total = 0
        self.failures_total = 0
        self._threads = anyio.CapacityLimiter(2)
        """Large redactions run on at most this many threads at once."""

    def mode_for(self, job: Job) -> PrivacyMode:
        requested = parse_mode(job.ctx.options.privacy)
        return strictest(self.default_mode, job.privacy, requested)

    def _redact(self, request: GenerationRequest) -> tuple[Redaction, Counter[str], str | None]:
        """The request's messages redacted; what its `user` holds, and the `user` to send."""
        redaction = self.redactor.redact(request.as_messages())
        user = request.user
        found_in_user: Counter[str] = Counter()
        # `user` goes upstream too (for abuse monitoring); an e-mail address there is no
        # less personal. It is replaced by a stable pseudonym, which still tells users apart.
        if user is not None and (found_in_user := self.redactor.redact([Message("user", user)]).counts):
            user = self.pseudonym(user)
        return redaction, found_in_user, user

    def pseudonym(self, user: str) -> str:
        """A stable stand-in for `user`: an HMAC under the server's secret, so that it cannot be
        reversed by hashing guesses (a phone number has few enough to try them all)."""
        return "user-" + hmac.new(self._secret, user.encode(), hashlib.sha256).hexdigest()[:32]

    async def _protect(self, job: Job, mode: PrivacyMode) -> Redaction | None:
        """Redact the job's request in place; None when there is nothing to restore."""
        request = job.request
        size = sum(len(m.content) for m in request.as_messages()) + len(request.user or "")
        try:
            if size > OFF_LOOP_CHARS:
                # Linear still takes time on a large body: the event loop (health checks, other
                # streams) keeps running meanwhile. RE2 releases the GIL while it matches.
                redaction, found_in_user, user = await anyio.to_thread.run_sync(
                    self._redact, request, limiter=self._threads
                )
            else:
                redaction, found_in_user, user = self._redact(request)
            redaction.counts.update(found_in_user)
        except Exception as exc:
            self.failures_total += 1
            log.error("redaction failed; request refused", extra={"error": type(exc).__name__})
            raise ServiceUnavailable(
                "Personal-data redaction could not run, so the request was not sent.",
                code="redaction_failed",
            ) from exc
        counts = dict(sorted(redaction.counts.items()))
        if mode == "block" and counts:
            self.blocked_total += 1
            found = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items())
            raise InvalidRequest(
                f"The prompt contains personal data ({found}) and this request's privacy mode is 'block'.",
                param="messages" if request.prompt is None else "prompt",
                code="personal_data_detected",
            )
        job.metadata["privacy"] = {"mode": mode, "redacted": counts}
        self.redacted_total.update(redaction.counts)
        if user != request.user:
            job.request = replace(request, user=user)
        if not redaction.values:
            return None
        if job.request.prompt is not None:
            job.request = replace(job.request, prompt=redaction.messages[0].content)
        else:
            job.request = replace(job.request, messages=redaction.messages)
        job.conceal = redaction.conceal
        return redaction

    # -- the runner protocol ----------------------------------------------------------------

    async def complete(self, job: Job) -> Completion:
        mode = self.mode_for(job)
        if mode == "off":
            return await self.inner.complete(job)
        redaction = await self._protect(job, mode)
        completion = await self.inner.complete(job)
        if redaction is None:
            return completion
        choices = tuple(
            replace(
                c,
                text=redaction.restore(c.text),
                tool_calls=tuple(replace(t, arguments=redaction.restore(t.arguments)) for t in c.tool_calls),
            )
            for c in completion.choices
        )
        return replace(completion, choices=choices)

    def stream(self, job: Job) -> AsyncGenerator[Chunk, None]:
        mode = self.mode_for(job)
        if mode == "off":
            return self.inner.stream(job)  # nothing to redact or restore: no extra step per chunk
        return self._restoring(job, mode)

    async def _restoring(self, job: Job, mode: PrivacyMode) -> AsyncGenerator[Chunk, None]:
        redaction = await self._protect(job, mode)
        if redaction is None:
            async with aclosing(self.inner.stream(job)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        async with aclosing(self.inner.stream(job)) as chunks:
            restorers: dict[int, StreamRestorer] = {}
            # Each call's arguments arrive in fragments: a placeholder may be split across them.
            arguments: dict[tuple[int, int], StreamRestorer] = {}

            def flush_calls(index: int) -> tuple[ToolCallDelta, ...]:
                out = []
                for (i, call), restorer in arguments.items():
                    if i == index and (rest := restorer.flush()):
                        out.append(ToolCallDelta(call, arguments=rest))
                return tuple(out)

            async for chunk in chunks:
                if chunk.usage is not None:
                    for index, restorer in restorers.items():
                        rest = restorer.flush()
                        calls = flush_calls(index)
                        if rest or calls:
                            yield Chunk(index=index, text=rest, tool_calls=calls)
                    yield chunk
                    continue
                restorer = restorers.setdefault(chunk.index, redaction.restorer())
                text = restorer.feed(chunk.text) if chunk.text else ""
                calls = tuple(
                    replace(
                        d,
                        arguments=arguments.setdefault((chunk.index, d.index), redaction.restorer()).feed(
                            d.arguments
                        ),
                    )
                    for d in chunk.tool_calls
                )
                calls = tuple(d for d in calls if d.arguments or d.id or d.name)
                if chunk.finish_reason is not None:
                    text += restorer.flush()
                    calls += flush_calls(chunk.index)
                if text or calls or chunk.finish_reason is not None or chunk.logprobs:
                    yield replace(chunk, text=text, tool_calls=calls)
            for index, restorer in restorers.items():
                rest = restorer.flush()
                calls = flush_calls(index)
                if rest or calls:
                    yield Chunk(index=index, text=rest, tool_calls=calls)
