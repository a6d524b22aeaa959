"""The embedded model, measured two ways with the same prompt, seed and sampling:

- `inproc`: llama-cpp-python called directly in this process (the limit);
- `http`: the service's streaming `/v1/generate` (provider=local);
- `http-logprobs`: the same, asking for each token's log probability and 5 alternatives.

Each prints one JSON line: tokens/s (text chunks per second of the whole stream) and time to
first token, as medians over `--runs` sequential streams.

    python -m bench.local_model inproc --runs 3 --max-tokens 128
    python -m bench.local_model http --url http://127.0.0.1:8000 --runs 3 --max-tokens 128
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
SEED = 42
TEMPERATURE = 0.7


def _summary(samples: list[tuple[float, float, int]]) -> dict[str, float]:
    """samples: (ttft s, total s, tokens)."""
    return {
        "runs": len(samples),
        "tokens": statistics.median(s[2] for s in samples),
        "ttft_ms": statistics.median(s[0] * 1000 for s in samples),
        "tokens_per_s": statistics.median(s[2] / s[1] for s in samples),
    }


def inproc(runs: int, max_tokens: int, n_ctx: int, n_threads: int | None) -> dict[str, float]:
    from llama_cpp import Llama

    from app.settings import Settings

    path = Settings(_env_file=None).local_gguf_path  # type: ignore[call-arg]
    llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, chat_format="chatml", verbose=False)
    samples = []
    for _ in range(runs + 1):  # the first run warms caches up and is not counted
        llm.reset()
        t0 = time.perf_counter()
        ttft = 0.0
        tokens = 0
        for piece in llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}],
            temperature=TEMPERATURE,
            top_p=1.0,
            max_tokens=max_tokens,
            seed=SEED,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            stream=True,
        ):
            if piece["choices"][0]["delta"].get("content"):  # type: ignore[index,union-attr]
                tokens += 1
                if not ttft:
                    ttft = time.perf_counter() - t0
        samples.append((ttft, time.perf_counter() - t0, tokens))
    return _summary(samples[1:])


def over_http(url: str, runs: int, max_tokens: int, logprobs: bool = False) -> dict[str, float]:
    parts = urlsplit(url)
    request: dict[str, Any] = {
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "seed": SEED,
        "temperature": TEMPERATURE,
        "stream": True,
    }
    if logprobs:
        request.update(logprobs=True, top_logprobs=5)
    body = orjson.dumps(request)
    samples = []
    for _ in range(runs + 1):
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=120)
        t0 = time.perf_counter()
        # no-store: a fixed seed makes the request cacheable, and a cached answer is not generation.
        headers = {"content-type": "application/json", "cache-control": "no-store"}
        conn.request("POST", "/v1/generate", body=body, headers=headers)
        response = conn.getresponse()
        ttft = 0.0
        tokens = 0
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            event: dict[str, Any] = orjson.loads(line[6:])
            if event.get("object") == "generation.chunk":
                tokens += 1
                if not ttft:
                    ttft = time.perf_counter() - t0
        samples.append((ttft, time.perf_counter() - t0, tokens))
        conn.close()
    return _summary(samples[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["inproc", "http", "http-logprobs"])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-threads", type=int, default=None)
    args = parser.parse_args()
    if args.mode == "inproc":
        result = inproc(args.runs, args.max_tokens, args.n_ctx, args.n_threads)
    else:
        result = over_http(args.url, args.runs, args.max_tokens, logprobs=args.mode == "http-logprobs")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
