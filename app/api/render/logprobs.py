"""Token log probabilities in OpenAI's shape, shared by chat and `/v1/generate`."""

from __future__ import annotations

from app.providers.base import TokenLogprob


def token_logprobs(tokens: tuple[TokenLogprob, ...]) -> list[dict[str, object]]:
    """`[{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]`."""
    return [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": None if t.bytes is None else list(t.bytes),
            "top_logprobs": [
                {"token": a.token, "logprob": a.logprob, "bytes": None if a.bytes is None else list(a.bytes)}
                for a in t.top
            ],
        }
        for t in tokens
    ]


def choice_logprobs(tokens: tuple[TokenLogprob, ...] | None) -> dict[str, object] | None:
    """OpenAI's `choice.logprobs` of chat: `{"content": [...], "refusal": null}`, or null."""
    if tokens is None:
        return None
    return {"content": token_logprobs(tokens), "refusal": None}
