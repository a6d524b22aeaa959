"""`python -m app.cli <command> ...`: `batch` (submit a batch file) or `probes` (run a bias probe)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("batch", "probes"):
        print("usage: python -m app.cli {batch,probes} ...", file=sys.stderr)
        return 2
    if argv[0] == "batch":
        from app.cli import batch

        return batch.main(argv[1:])
    from app.cli import probes

    return int(probes.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
