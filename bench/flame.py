"""Summarise py-spy's collapsed stacks (`py-spy record -f raw`): inclusive share per frame, or
with `--parts` the share of each part of the request path (each sample goes to the innermost
frame that is not the standard library: `uuid4` called by genserve counts as genserve's).

python -m bench.flame profile.txt [--top 40] [--match app/] [--parts]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent) + "/"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            frames = []
            for frame in stack.split(";"):
                m = _FRAME.match(frame)
                if m:
                    short = m["file"].split("site-packages/")[-1].split(ROOT)[-1]
                    frames.append(f"{m['func']} ({short})")
                else:
                    frames.append(frame)
            stacks.append((frames, int(count)))
    return stacks


#: (part, path prefixes), first match wins; paths as `load` shortens them.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "openai SDK request path (openai, httpx2, aiohttp)",
        ("openai/", "httpx2/", "aiohttp/", "multidict/", "yarl/"),
    ),
    ("access log (logging, JSON formatter)", ("app/observability/logging.py", "logging/")),
    ("metrics (prometheus-client)", ("prometheus_client/",)),
    (
        "records and usage (SQLAlchemy, aiosqlite)",
        (
            "sqlalchemy/",
            "aiosqlite/",
            "app/services/apps/records.py",
            "app/services/gateway/usage.py",
            "sqlite3/",
        ),
    ),
    (
        "request body parsing and validation (pydantic)",
        ("pydantic/", "pydantic_core/", "json/", "app/schemas/"),
    ),
    (
        "genserve middleware",
        (
            "app/observability/request_id.py",
            "app/observability/requests.py",
            "app/api/request_options.py",
            "app/api/admission.py",
            "app/api/middleware/body_limit.py",
            "app/api/middleware.py",
        ),
    ),
    ("genserve streaming (SSE rendering and writes)", ("app/api/streaming.py", "app/api/sse_response.py")),
    ("genserve: routes, planning, hooks, safeguards", ("app/", "bench/floor.py")),
    (
        "framework (uvicorn, Starlette, FastAPI routing and dependencies)",
        ("uvicorn/", "starlette/", "fastapi/"),
    ),
)


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        file = frame[frame.rfind("(") + 1 : -1]
        top = file.split("/", 1)[0].split(".", 1)[0]
        if file.startswith("<") or top in sys.stdlib_module_names:
            continue
        for part, prefixes in PARTS:
            if file.startswith(prefixes):
                return part
        return "other: " + top
    return "event loop and the standard library"


def parts(stacks: list[tuple[list[str], int]]) -> collections.Counter[str]:
    shares: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        shares[part_of(frames)] += count
    return shares


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="")
    parser.add_argument("--parts", action="store_true", help="share of each part of the request path")
    args = parser.parse_args()
    stacks = load(args.path)
    total = sum(c for _, c in stacks)
    if args.parts:
        for part, count in parts(stacks).most_common():
            print(f"{100 * count / total:5.1f}%  {part}")
        return
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    print(f"{total} samples")
    print("inclusive:")
    for frame, count in inclusive.most_common():
        if args.match in frame:
            print(f"  {100 * count / total:5.1f}%  {frame}")
            args.top -= 1
            if args.top <= 0:
                break
    print("self:")
    for frame, count in own.most_common(25):
        print(f"  {100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
