"""A fake OpenAI chat upstream for preset, record and tuning tests: answers every request (JSON or
SSE) with text chosen by a function of the request body, and keeps the bodies it received."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import respx

from tests.conftest import serving

Reply = Callable[[dict[str, Any]], str]


def system_prompt(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


def user_prompt(body: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


class FakeUpstream:
    """Install with `fake.install(upstream)` on the `upstream` respx router."""

    def __init__(self, reply: Reply | str = "A fine answer.") -> None:
        self.reply: Reply = reply if callable(reply) else (lambda _body, text=reply: text)
        self.bodies: list[dict[str, Any]] = []

    def install(self, router: respx.MockRouter) -> FakeUpstream:
        router.post("/chat/completions").mock(side_effect=self.handle)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        text = self.reply(body)
        n = body.get("n") or 1
        usage = {"prompt_tokens": 20, "completion_tokens": len(text.split()), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            return httpx.Response(
                200,
                json={
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                        for i in range(n)
                    ],
                    "usage": usage,
                },
            )
        head = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"],
        }
        events = []
        for i in range(n):
            for word in text.split(" "):
                delta = {"role": "assistant", "content": word + " "}
                events.append({**head, "choices": [{"index": i, "delta": delta, "finish_reason": None}]})
            events.append({**head, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]})
        events.append({**head, "choices": [], "usage": usage})
        content = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, content=content.encode(), headers={"content-type": "text/event-stream"})


serve = serving
"""Run `app`'s lifespan and talk to it in-process."""


def sse_events(text: str) -> list[Any]:
    """The JSON payloads of an SSE body, `[DONE]` included as the string."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
