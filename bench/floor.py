"""The floor for any FastAPI service built on the `openai` SDK, for each scenario `make bench` runs.

One shared `AsyncOpenAI` (aiohttp transport, no retries), as the service's provider uses it:

- `POST /v1/chat/completions`: the body handed to the SDK's `post` (raw response), the upstream's
  bytes returned;
- `POST /v1/generate`: `{"prompt": ...}` wrapped into one user message, the same call;
- with `"stream": true`, either route: the SDK's stream (the same `post`, `stream=True`, as the
  service's provider makes), relayed event by event as server-sent events by FastAPI's
  `StreamingResponse`; the JSON inside each event is passed on unread.

The SDK's typed stream (`chat.completions.create(stream=True)`, a pydantic model per chunk) would
make a floor several times higher (≈ 10 ms per 64-chunk stream against ≈ 2.3 ms on the bench
machine), and piping the bytes through unsplit a lower one that relays no events (≈ 1.5 ms):
relaying events unread is the least a stream relay that speaks SSE does.

No validation, no metrics, no logs, no limits, no records: what genserve adds on top of this is
what its own features cost.

    python -m bench.floor --port 8100 --upstream http://127.0.0.1:8101/v1
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse


def create(upstream: str) -> FastAPI:
    client = openai.AsyncOpenAI(
        api_key="sk-floor", base_url=upstream, max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    app = FastAPI()
    options: Any = {"security": {"bearer_auth": True}}

    async def answer(body: dict[str, Any]) -> Response:
        reply = await client.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            body=body,
            options=options,
            stream=bool(body.get("stream")),
        )
        if not body.get("stream"):
            return Response(reply.content, media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            # One SSE event in, one SSE event out; the JSON inside is passed on unread.
            try:
                buffer = b""
                async for piece in reply.aiter_bytes():
                    *complete, buffer = (buffer + piece).split(b"\n\n")
                    for event in complete:
                        yield event + b"\n\n"
            finally:
                await reply.aclose()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await answer(orjson.loads(await request.body()))

    @app.post("/v1/generate")
    async def generate(request: Request) -> Response:
        body = orjson.loads(await request.body())
        prompt = body.pop("prompt")
        return await answer({**body, "messages": [{"role": "user", "content": prompt}]})

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
