"""Feedback tuning, simulated: users like one copywriting variant 80% of the time and the others
40%; Thompson sampling should learn to pick that variant. Runs the real service in-process against
a mocked upstream and draws how often each variant is chosen, round by round, into docs/tuning.png.

    make tuning-plot     # or: .venv/bin/python -m bench.tuning_convergence [--rounds 300] [--runs 8]
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the script aliases httpx2 as httpx before anything imports httpx
    import httpx

PRESET = "copywriting"
PREFERRED = "lively"


async def simulate(
    client: httpx.AsyncClient,
    *,
    rounds: int = 300,
    preset: str = PRESET,
    preferred: str = PREFERRED,
    p_preferred: float = 0.8,
    p_other: float = 0.4,
    seed: int = 0,
    on_round: Callable[[int], None] | None = None,
) -> list[str]:
    """Generate `rounds` times through the HTTP API and rate each answer like a user who likes
    `preferred` with probability `p_preferred` and any other variant with `p_other`. Returns
    the variant chosen in each round. `on_round(i)` runs before each round (a test moves its
    clock there, so the tuning state refreshes every so many rounds whatever the machine's speed)."""
    users = random.Random(seed)
    chosen: list[str] = []
    for i in range(rounds):
        if on_round is not None:
            on_round(i)
        r = await client.post(f"/v1/presets/{preset}/generate", json={"inputs": {"topic": "green tea"}})
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        variant = body["sampling"]["variant"]
        assert body["sampling"]["tuned"], body["sampling"]
        chosen.append(variant)
        liked = users.random() < (p_preferred if variant == preferred else p_other)
        rating = "up" if liked else "down"
        r = await client.post("/v1/feedback", json={"generation_id": body["id"], "rating": rating})
        r.raise_for_status()
    return chosen


async def _run(rounds: int, seed: int) -> tuple[list[str], list[str]]:
    """One simulation on a fresh service and database."""
    import tempfile

    import httpx2

    httpx2.alias_httpx()
    import httpx
    import respx

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        provider="openai",
        openai_api_key="sk-simulation",
        openai_base_url="http://upstream.test/v1",
        openai_http_transport="httpx",
        data_dir=tempfile.mkdtemp(prefix="genserve-tuning-"),
        log_level="WARNING",
    )
    reply = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Tea!"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31},
    }
    app = create_app(settings)
    with respx.mock(base_url="http://upstream.test/v1") as upstream:
        upstream.post("/chat/completions").respond(json=reply)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test") as client:
                chosen = await simulate(client, rounds=rounds, seed=seed)
                variants = [
                    v["name"] for v in (await client.get(f"/v1/presets/{PRESET}/tuning")).json()["variants"]
                ]
    return chosen, variants


def plot(runs: list[list[str]], variants: list[str], out: str, window: int = 20) -> None:
    """The share of requests each variant got at each round, averaged over the runs and
    smoothed over `window` rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = len(runs[0])
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    for name in variants:
        per_round = [sum(run[i] == name for run in runs) / len(runs) for i in range(rounds)]
        smooth = [sum(per_round[max(0, i - window + 1) : i + 1]) / min(window, i + 1) for i in range(rounds)]
        label = f"{name} (liked 80%)" if name == PREFERRED else f"{name} (liked 40%)"
        ax.plot(range(1, rounds + 1), smooth, label=label, linewidth=2.2 if name == PREFERRED else 1.2)
    ax.axhline(1 / len(variants), color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("request")
    ax.set_ylabel("share of requests")
    ax.set_ylim(0, 1)
    ax.set_title(
        f"Thompson sampling over feedback: preset '{PRESET}'\n"
        f"{len(runs)} simulated runs, averaged, smoothed over {window} requests",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--out", default="docs/tuning.png")
    args = parser.parse_args()
    runs: list[list[str]] = []
    variants: list[str] = []
    for seed in range(args.runs):
        chosen, variants = asyncio.run(_run(args.rounds, seed))
        runs.append(chosen)
        late = chosen[-100:]
        print(f"run {seed}: {PREFERRED} chosen {late.count(PREFERRED)} of the last {len(late)} requests")
    plot(runs, variants, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
