"""Compare checkouts of the service (e.g. before and after a change) on the same scenarios,
alternating between them round after round, against one fake upstream.

    python -m bench.compare before=/tmp/genserve-before after=. --rounds 3 --seconds 5

Prints, per checkout, medians over the rounds: service CPU per request and requests/s for
plain chat completions at c=1 and c=16, added p50 at c=1, and CPU per 64-chunk stream.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import orjson

from bench import run


def measure(directory: Path, upstream_port: int, seconds: float, script: Path) -> dict[str, float]:
    port = run.free_port()
    env = {
        "GENSERVE_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "GENSERVE_OPENAI_MODELS": "gpt-4o-mini",
        "GENSERVE_PORT": str(port),
        "GENSERVE_LOG_LEVEL": "INFO",
    }
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    stream_body = orjson.dumps({**orjson.loads(run.CHAT_BODY), "stream": True})
    with run.process(
        [run.PY, "-m", "app"], env=env, ready=f"http://127.0.0.1:{port}/readyz", cwd=directory
    ) as pid:
        run.wrk(url, run.CHAT_BODY, 4, 1, None, script)  # warm-up
        d1 = run.wrk(direct, run.CHAT_BODY, 1, seconds, None, script)
        c1 = run.wrk(url, run.CHAT_BODY, 1, seconds, pid, script)
        c16 = run.wrk(url, run.CHAT_BODY, 16, seconds, pid, script)
        s1 = run.sse(url, stream_body, 1, seconds, pid)
    return {
        "cpu_ms_c1": c1.cpu_ms_per_request or 0,
        "cpu_ms_c16": c16.cpu_ms_per_request or 0,
        "rps_c1": c1.rps,
        "rps_c16": c16.rps,
        "added_p50_c1": c1.p50 - d1.p50,
        "stream_cpu_ms": s1.cpu_ms_per_stream or 0,
        "stream_total_p50": s1.total_p50,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkouts", nargs="+", help="label=directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    checkouts = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.checkouts]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in checkouts}
    up_port = run.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(run.WRK_SCRIPT)
        upstream = [run.PY, "-m", "bench.upstream", "--port", str(up_port), "--chunks", str(run.CHUNKS)]
        with run.process(upstream, ready=f"http://127.0.0.1:{up_port}/v1/models"):
            for _ in range(args.rounds):
                for label, directory in checkouts:
                    results[label].append(measure(directory, up_port, args.seconds, script))
                    print(label, results[label][-1], flush=True)
    keys = list(next(iter(results.values()))[0])
    print("| checkout | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for label, rows in results.items():
        cells = [f"{statistics.median(r[k] for r in rows):,.2f}" for k in keys]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
