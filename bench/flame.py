"""Summarise py-spy's collapsed stacks (`py-spy record -f raw`): inclusive share per frame.

python -m bench.flame profile.txt [--top 40] [--match app/]
"""

from __future__ import annotations

import argparse
import collections
import re

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
                    short = m["file"].split("site-packages/")[-1].split("/work/wt-perf/")[-1]
                    frames.append(f"{m['func']} ({short})")
                else:
                    frames.append(frame)
            stacks.append((frames, int(count)))
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="")
    args = parser.parse_args()
    stacks = load(args.path)
    total = sum(c for _, c in stacks)
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
