"""Compare checkouts of the service (e.g. before and after a change) on the same scenarios,
alternating between them round after round, against one fake upstream and one floor
(`bench/floor.py`) measured in every round.

    python -m bench.compare before=/tmp/genserve-before after=. --rounds 3 --seconds 5

Prints, per checkout, medians over the rounds: CPU per request of plain chat completions at c=1
and c=16 and per 64-chunk stream at c=16, each also as a ratio to the floor's in the same round,
and the added p50 at c=1 beside the floor's. A machine shared with other work is noisy: read the
ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import orjson

from bench import run

STREAM_BODY = orjson.dumps({**orjson.loads(run.CHAT_BODY), "stream": True})
PATH = "/v1/chat/completions"


def scenarios(base: str, pid: int, direct: str, seconds: float, script: Path) -> dict[str, float]:
    run.wrk(base + PATH, run.CHAT_BODY, 4, 1, None, script)  # warm-up
    d1 = run.wrk(direct, run.CHAT_BODY, 1, seconds, None, script)
    c1 = run.wrk(base + PATH, run.CHAT_BODY, 1, seconds, pid, script)
    c16 = run.wrk(base + PATH, run.CHAT_BODY, 16, seconds, pid, script)
    s16 = run.sse(base + PATH, STREAM_BODY, 16, seconds, pid)
    return {
        "cpu_ms_c1": c1.cpu_ms or 0,
        "cpu_ms_c16": c16.cpu_ms or 0,
        "stream_cpu_ms_c16": s16.cpu_ms or 0,
        "added_p50_c1": c1.p50 - d1.p50,
    }


def service(directory: Path, upstream_port: int, seconds: float, script: Path) -> dict[str, float]:
    port = run.free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    base = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory() as data_dir,
        run.process(
            [run.PY, "-m", "app"],
            env=run.service_env(upstream, port, data_dir),
            ready=f"{base}/readyz",
            cwd=directory,
        ) as pid,
    ):
        return scenarios(base, pid, upstream + PATH, seconds, script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkouts", nargs="+", help="label=directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    checkouts = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.checkouts]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in checkouts}
    results["floor"] = []
    up_port, floor_port = run.free_port(), run.free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    floor = f"http://127.0.0.1:{floor_port}"
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(run.WRK_SCRIPT)
        with (
            run.process(
                [run.PY, "-m", "bench.upstream", "--port", str(up_port), "--chunks", str(run.CHUNKS)],
                ready=f"{upstream}/v1/models",
            ),
            run.process(
                [run.PY, "-m", "bench.floor", "--port", str(floor_port), "--upstream", f"{upstream}/v1"],
                ready=f"{floor}/readyz",
            ) as floor_pid,
        ):
            for _ in range(args.rounds):
                floor_round = scenarios(floor, floor_pid, upstream + PATH, args.seconds, script)
                results["floor"].append(floor_round)
                print("floor", floor_round, flush=True)
                for label, directory in checkouts:
                    r = service(directory, up_port, args.seconds, script)
                    for key in ("cpu_ms_c1", "cpu_ms_c16", "stream_cpu_ms_c16"):
                        r[f"{key}_ratio"] = r[key] / floor_round[key] if floor_round[key] else 0.0
                    r["added_p50_c1_over_floor"] = r["added_p50_c1"] - floor_round["added_p50_c1"]
                    results[label].append(r)
                    print(label, r, flush=True)
    keys = list(results[checkouts[0][0]][0])
    print("| checkout | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for label, rows in results.items():
        cells = [f"{statistics.median(r[k] for r in rows):,.2f}" if k in rows[0] else "" for k in keys]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
