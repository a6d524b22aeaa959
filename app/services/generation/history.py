"""Fitting a stored history into a model's context window (conversations, chained responses).

Turns are walked back from the newest while they fit beside the fixed part (system prompt, the
new message) and the room kept for the reply; the kept history then starts with a user turn (a
reply without its question misleads the model).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from app.providers.base import Message, Provider

# Providers estimate the chat template's framing (role markers, separators); measured on the
# embedded model's ChatML, the estimate runs about one token low per exchange, plus an empty
# system block when there is no system prompt. Keep that much slack rather than overflow.
_SLACK_TOKENS = 8
_SLACK_PER_MESSAGE = 1


class TokenCounter:
    """Token costs with the model's own tokenizer (through the provider), message by message:
    providers count a fixed priming cost plus one cost per message, so a history's cost is a
    sum. Every count includes the slack above."""

    def __init__(self, provider: Provider, model: str) -> None:
        self._provider = provider
        self._model = model
        self._base = provider.count_tokens(model, ())

    def total(self, messages: Sequence[Message]) -> int:
        counted = self._provider.count_tokens(self._model, tuple(messages))
        return counted + _SLACK_TOKENS + _SLACK_PER_MESSAGE * len(messages)

    def cost(self, message: Message) -> int:
        return self._provider.count_tokens(self._model, (message,)) - self._base + _SLACK_PER_MESSAGE

    def fixed(self, system: str | None, content: str | None) -> int:
        """Priming, the system prompt and the new message: what every request must hold."""
        total = self._base + _SLACK_TOKENS
        if system:
            total += self.cost(Message("system", system))
        if content is not None:
            total += self.cost(Message("user", content))
        return total


async def fit_history(
    counter: TokenCounter,
    newest_first: AsyncGenerator[Message, None],
    *,
    head: Sequence[Message],
    tail: Sequence[Message],
    budget: int,
    room: int,
) -> list[Message]:
    """The newest turns of `newest_first` that fit `budget` tokens, oldest first, starting with a
    user turn; then, checked as a whole (`head` + history + `tail` + `room` for the reply within
    the window's `room`), the oldest exchanges are dropped until it fits."""
    kept: list[Message] = []
    async with aclosing(newest_first) as turns:
        async for message in turns:
            cost = counter.cost(message)
            if cost > budget:
                break
            budget -= cost
            kept.append(message)
    while kept and kept[-1].role != "user":
        kept.pop()
    kept.reverse()
    # The sum of per-message costs is what providers count; check the whole once anyway.
    while kept and counter.total([*head, *kept, *tail]) > room:
        # Drop the oldest exchange whole: a tool result never outlives the call it answers.
        del kept[0]
        while kept and kept[0].role != "user":
            del kept[0]
    return kept


async def whole_history(
    counter: TokenCounter, newest_first: AsyncGenerator[Message, None], *, budget: int
) -> list[Message] | None:
    """Every message of `newest_first`, oldest first (what `fit_history` gives when nothing may be
    left out), or None as soon as they cost more than `budget` tokens (so a long chain is not
    read whole only to be refused)."""
    kept: list[Message] = []
    async with aclosing(newest_first) as turns:
        async for message in turns:
            budget -= counter.cost(message)
            if budget < 0:
                return None
            kept.append(message)
    kept.reverse()
    return kept
