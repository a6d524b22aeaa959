"""`python -m app.cli.probes bias --suite NAME --out DIR`: run a bias probe in-process, with the
service's own settings (environment and `.env`), and write its report as Markdown and PNG charts.

Its generations go through the same generation service as the API's and are recorded under the
usage key `cli`. The exit status is 0 when no difference was detected, 3 when one was (for CI
gates), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.errors import AppError
from app.schemas.probes import BiasProbeRequest

DIFFERENCE_FOUND = 3


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.cli.probes", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bias = sub.add_parser("bias", help="run a bias probe with counterfactual pairs")
    source = bias.add_mutually_exclusive_group(required=True)
    source.add_argument("--suite", help="a built-in suite (see --list)")
    source.add_argument("--request", type=Path, help="a JSON file with a POST /v1/probes/bias body")
    source.add_argument("--list", action="store_true", help="list the built-in suites and exit")
    bias.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report/)")
    bias.add_argument("--samples", type=int, help="pairs per group")
    bias.add_argument("--max-tokens", type=int)
    bias.add_argument("--temperature", type=float)
    bias.add_argument("--seed", type=int)
    bias.add_argument("--model")
    return parser.parse_args(argv)


def request_of(args: argparse.Namespace) -> BiasProbeRequest:
    body: dict[str, Any] = {"suite": args.suite}
    if args.request is not None:
        body = json.loads(args.request.read_text(encoding="utf-8"))
    for field, value in (
        ("samples", args.samples),
        ("max_tokens", args.max_tokens),
        ("temperature", args.temperature),
        ("seed", args.seed),
        ("model", args.model),
    ):
        if value is not None:
            body[field] = value
    return BiasProbeRequest.model_validate(body)


async def run(args: argparse.Namespace) -> int:
    from app.main import create_app
    from app.services.apps.probes import files
    from app.services.generation.caller import Client
    from app.services.generation.context import RequestContext

    app = create_app()
    async with app.router.lifespan_context(app):
        state = app.state.genserve
        if args.list:
            for suite in state.probes.suites():
                print(f"{suite.name:18} {suite.title}")
            return 0
        ctx = RequestContext.internal(Client(key_id="cli", name="python -m app.cli.probes"))
        plan = state.probes.plan_bias(ctx, request_of(args))
        done = 0

        async def progress(count: int) -> bool:
            nonlocal done
            done = count
            print(f"\r{done}/{plan.total} generations", end="", file=sys.stderr, flush=True)
            return True

        report = await state.probes.run_bias(ctx, plan, progress)
        print(file=sys.stderr)
    path = files.write(report, plan.as_dict(), args.out)
    print(report["verdict"])
    print(f"Report: {path}")
    return DIFFERENCE_FOUND if any(m["significant"] for m in report["measures"]) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(run(args))
    except (ValidationError, AppError, OSError, json.JSONDecodeError) as exc:
        message = exc.message if isinstance(exc, AppError) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
