"""The floor for any FastAPI service built on the `openai` SDK: one route that hands the body
to one shared `AsyncOpenAI` (aiohttp transport, raw response, no retries) and returns the
upstream's bytes. No validation, no metrics, no logs, no limits: what genserve adds on top of
this is what its own features cost.

python -m bench.floor --port 8100 --upstream http://127.0.0.1:8101/v1
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx2
import openai
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response


def create(upstream: str) -> FastAPI:
    client = openai.AsyncOpenAI(
        api_key="sk-floor", base_url=upstream, max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    app = FastAPI()
    options: Any = {"security": {"bearer_auth": True}}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        answer = await client.post("/chat/completions", cast_to=httpx2.Response, body=body, options=options)
        return Response(answer.content, media_type="application/json")

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
