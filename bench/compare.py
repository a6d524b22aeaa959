"""Compare checkouts of the service (e.g. before and after a change) against the floor
(`bench/floor.py`), all running at once against one fake upstream and loaded in turn, in many
short rounds: a machine shared with other work drifts, so each round's figures are divided by
the floor's from the same round and the medians of those ratios are what to read.

    python -m bench.compare before=/tmp/genserve-before after=. --rounds 8 --seconds 2

Per checkout: CPU per plain chat completion at c=16 and per 64-chunk stream at c=16, each as a
ratio to the floor's, and the added p50 at c=1 minus the floor's (ms).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

import orjson

from bench import run

STREAM_BODY = orjson.dumps({**orjson.loads(run.CHAT_BODY), "stream": True})
PATH = "/v1/chat/completions"


def one_round(base: str, pid: int, direct: run.Load, seconds: float, script: Path) -> dict[str, float]:
    c1 = run.wrk(base + PATH, run.CHAT_BODY, 1, seconds, pid, script)
    c16 = run.wrk(base + PATH, run.CHAT_BODY, 16, seconds, pid, script)
    s16 = run.sse(base + PATH, STREAM_BODY, 16, seconds, pid)
    return {"c16": c16.cpu_ms or 0, "s16": s16.cpu_ms or 0, "c1_p50": c1.p50 - direct.p50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkouts", nargs="+", help="label=directory")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2)
    args = parser.parse_args()
    checkouts = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.checkouts]
    up_port, floor_port = run.free_port(), run.free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        script = Path(tmp) / "post.lua"
        script.write_text(run.WRK_SCRIPT)
        upstream_args = [run.PY, "-m", "bench.upstream", "--port", str(up_port), "--chunks", str(run.CHUNKS)]
        stack.enter_context(run.process(upstream_args, ready=f"{upstream}/v1/models"))
        floor_args = [run.PY, "-m", "bench.floor", "--port", str(floor_port), "--upstream", f"{upstream}/v1"]
        floor = f"http://127.0.0.1:{floor_port}"
        targets = {"floor": (floor, stack.enter_context(run.process(floor_args, ready=f"{floor}/readyz")))}
        for label, directory in checkouts:
            port = run.free_port()
            base = f"http://127.0.0.1:{port}"
            data = Path(tmp) / label
            data.mkdir()
            env = run.service_env(upstream, port, str(data))
            service = run.process([run.PY, "-m", "app"], env=env, ready=f"{base}/readyz", cwd=directory)
            targets[label] = (base, stack.enter_context(service))
        for base, _ in targets.values():
            run.wrk(base + PATH, run.CHAT_BODY, 4, 1, None, script)  # warm-up
        ratios: dict[str, list[dict[str, float]]] = {label: [] for label, _ in checkouts}
        names = list(targets)
        for i in range(args.rounds):
            direct = run.wrk(upstream + PATH, run.CHAT_BODY, 1, args.seconds, None, script)
            figures = {}
            for name in names[i % len(names) :] + names[: i % len(names)]:
                base, pid = targets[name]
                figures[name] = one_round(base, pid, direct, args.seconds, script)
            floor_figures = figures["floor"]
            for label, _ in checkouts:
                mine = figures[label]
                ratios[label].append(
                    {
                        "CPU c=16 ÷ floor": mine["c16"] / floor_figures["c16"],
                        "CPU stream c=16 ÷ floor": mine["s16"] / floor_figures["s16"],
                        "added p50 c=1 − floor's (ms)": mine["c1_p50"] - floor_figures["c1_p50"],
                    }
                )
            summary = "  ".join(
                f"{label}: {r[-1]['CPU c=16 ÷ floor']:.2f} / {r[-1]['CPU stream c=16 ÷ floor']:.2f}"
                for label, r in ratios.items()
            )
            print(f"round {i + 1}: floor {floor_figures['c16']:.2f} ms/req  {summary}", flush=True)
    keys = list(next(iter(ratios.values()))[0])
    print("\n| checkout | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for label, rows in ratios.items():
        cells = [f"{statistics.median(r[k] for r in rows):.2f}" for k in keys]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
