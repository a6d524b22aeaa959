"""Search latency of the chunk index: one store of N chunks (random unit vectors of the
embedded embedder's 384 dimensions, synthetic text of a 5,000-word vocabulary), hybrid search
with a warm vector cache, p50/p99 over `--queries` searches. Prints one JSON line per size.

    python -m bench.search --sizes 10000,100000 --queries 200 [--url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import numpy as np
import orjson

from app.services.retrieval.index import ChunkIn, SearchQuery, SqlChunkIndex
from app.storage.db import Database

DIMS = 384
PER_FILE = 1000


def _words(rng: np.random.Generator, vocabulary: list[str], n: int) -> str:
    # Zipf-like: a few words are common (as in text), most are rare.
    picks = np.minimum(rng.zipf(1.3, n) - 1, len(vocabulary) - 1)
    return " ".join(vocabulary[i] for i in picks)


async def measure(url: str, size: int, queries: int) -> dict[str, float]:
    rng = np.random.default_rng(size)
    vocabulary = [f"w{i}" for i in range(5000)]
    db = Database(url)
    await db.migrate()
    index = SqlChunkIndex(db, cache_bytes=1 << 30)
    store = f"vs_bench_{size}"
    started = time.perf_counter()
    for f in range(0, size, PER_FILE):
        vectors = rng.standard_normal((PER_FILE, DIMS)).astype("<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [
            ChunkIn(seq=i, text=_words(rng, vocabulary, 60), tokens=80, vector=vectors[i])
            for i in range(min(PER_FILE, size - f))
        ]
        await index.add(store, f"file-{f}", f"{f}.txt", {"n": f}, chunks)
    load_s = time.perf_counter() - started
    samples: list[float] = []
    for q in range(queries + 5):
        vector = rng.standard_normal(DIMS).astype("<f4")
        vector /= np.linalg.norm(vector)
        query = SearchQuery(text=_words(rng, vocabulary, 6), vector=list(vector), max_results=10)
        t0 = time.perf_counter()
        await index.search([store], query)
        if q >= 5:  # the first searches load the matrix into the cache
            samples.append(time.perf_counter() - t0)
    await db.aclose()
    samples.sort()
    return {
        "chunks": size,
        "p50_ms": 1000 * statistics.median(samples),
        "p99_ms": 1000 * samples[min(len(samples) - 1, int(0.99 * len(samples)))],
        "load_s": load_s,
    }


async def _main(url: str | None, sizes: list[int], queries: int) -> None:
    for size in sizes:
        where = url or f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='genserve-bench-')}/bench.db"
        result = await measure(where, size, queries)
        result["engine"] = "postgresql" if where.startswith("postgresql") else "sqlite"  # type: ignore[assignment]
        print(orjson.dumps(result).decode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--url", default=None, help="a database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    asyncio.run(_main(args.url, [int(s) for s in args.sizes.split(",")], args.queries))


if __name__ == "__main__":
    main()
