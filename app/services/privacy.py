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
import ipaddress
import logging
import re
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Literal

from app.errors import InvalidRequest, ServiceUnavailable
from app.providers.base import Chunk, Completion, Message, ToolCallDelta
from app.services.context import PRIVACY_HEADER
from app.services.generation import Job, Runner
from app.settings import Settings

log = logging.getLogger("genserve.privacy")

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
_PLACEHOLDER = re.compile(r"\[(?:EMAIL|ID_NUMBER|CARD|IP|PHONE)_\d+\]")

# --- detectors ------------------------------------------------------------------------------
# Digits are fenced with (?<!\d)/(?!\d) rather than \b: in Unicode text a CJK character counts as a
# word character, so "号码13812345678" has no \b before the number.

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
)
_CN_ID = re.compile(
    r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?!\d)"
)
_CARD = re.compile(r"(?<!\d)(?:\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5}|\d{13,19})(?!\d)")
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)"
)
_IPV6 = re.compile(
    r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![0-9A-Fa-f:])"
)
_PHONES = (
    # mainland-China mobile: 1[3-9]x xxxx xxxx, optionally +86 / 0086
    re.compile(r"(?<![\d+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)"),
    # mainland-China landline: 0xx-xxxxxxxx / 0xxx-xxxxxxx
    re.compile(r"(?<![\d+])(?:\(0\d{2,3}\)|0\d{2,3}-)\d{7,8}(?!\d)"),
    # international: +country and 7 to 14 more digits, with the usual separators
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"),
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671
    re.compile(r"(?<![\d(])(?:\(\d{3}\)\s?|\d{3}[.-])\d{3}[.-]\d{4}(?!\d)"),
)

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def valid_cn_id(number: str) -> bool:
    """GB 11643: the 18th character is a checksum of the first 17 digits."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid_card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _valid_ipv6(text: str) -> bool:
    if text.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _valid_phone(text: str) -> bool:
    return 7 <= sum(ch.isdigit() for ch in text) <= 15


_DETECTORS: tuple[tuple[Kind, re.Pattern[str], Callable[[str], bool] | None], ...] = (
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
        return _PLACEHOLDER.sub(lambda m: self.values.get(m.group(0), m.group(0)), text)

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
    """Finds personal data and replaces each distinct value with a numbered placeholder."""

    def redact(self, messages: Iterable[Message]) -> Redaction:
        messages = tuple(messages)
        everything = "\n".join(
            [m.content for m in messages] + [c.arguments for m in messages for c in m.tool_calls]
        )
        redaction = Redaction(messages=())
        by_value: dict[tuple[Kind, str], str] = {}
        numbers: Counter[Kind] = Counter()

        def placeholder(kind: Kind, value: str) -> str:
            existing = by_value.get((kind, value))
            if existing is not None:
                return existing
            while True:
                numbers[kind] += 1
                candidate = f"[{_LABELS[kind]}_{numbers[kind]}]"
                if candidate not in everything:  # never collide with text the client wrote
                    break
            by_value[(kind, value)] = candidate
            redaction.values[candidate] = value
            return candidate

        def scrub(text: str) -> str:
            for kind, pattern, valid in _DETECTORS:
                text = self._replace(text, kind, pattern, valid, placeholder, redaction.counts)
            return text

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

    @staticmethod
    def _replace(
        text: str,
        kind: Kind,
        pattern: re.Pattern[str],
        valid: Callable[[str], bool] | None,
        placeholder: Callable[[Kind, str], str],
        counts: Counter[str],
    ) -> str:
        def sub(match: re.Match[str]) -> str:
            value = match.group(0)
            if valid is not None and not valid(value):
                return value
            counts[kind] += 1
            return placeholder(kind, value)

        return pattern.sub(sub, text)


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

    def __init__(self, settings: Settings, inner: Runner, redactor: Redactor | None = None) -> None:
        self.default_mode: PrivacyMode = settings.privacy_mode
        self.inner = inner
        self.redactor = redactor or Redactor()
        self.redacted_total: Counter[str] = Counter()
        """Items redacted per kind since start (for metrics)."""
        self.blocked_total = 0
        self.failures_total = 0

    def mode_for(self, job: Job) -> PrivacyMode:
        requested = parse_mode(job.ctx.options.privacy)
        return strictest(self.default_mode, job.privacy, requested)

    def _protect(self, job: Job) -> Redaction | None:
        """Redact the job's request in place; None when there is nothing to restore."""
        mode = self.mode_for(job)
        if mode == "off":
            return None
        request = job.request
        try:
            redaction = self.redactor.redact(request.as_messages())
            # `user` goes upstream too (for abuse monitoring); an e-mail address there is no
            # less personal. It is replaced by a stable pseudonym, which still tells users apart.
            user = request.user
            if user is not None and (found_in_user := self.redactor.redact([Message("user", user)]).counts):
                redaction.counts.update(found_in_user)
                user = "user-" + hashlib.sha256(user.encode()).hexdigest()[:16]
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
        return redaction

    # -- the runner protocol ----------------------------------------------------------------

    async def complete(self, job: Job) -> Completion:
        redaction = self._protect(job)
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
        redaction = self._protect(job)
        if redaction is None:
            return self.inner.stream(job)  # nothing to restore: no extra step per chunk
        return self._restoring(job, redaction)

    async def _restoring(self, job: Job, redaction: Redaction) -> AsyncGenerator[Chunk, None]:
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
