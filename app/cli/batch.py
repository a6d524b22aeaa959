"""`python -m app.cli batch submit lines.jsonl --endpoint /v1/chat/completions --wait`: upload a
JSONL file of requests to a running service, create a batch, and (with `--wait`) follow it with a
progress bar and download its output and error files.

It talks to the service over HTTP (`--base-url`, default http://127.0.0.1:8000; the key from
`--api-key` or `GENSERVE_API_KEY`), so the lines run on the service's replicas under the key's
limits, exactly as through the API. Exit status: 0 when the batch completed with no failed line,
1 when it ended otherwise (or some lines failed), 2 on bad arguments or a refused request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import httpx

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/generate")
ENDED = ("completed", "failed", "expired", "cancelled")
BAR = 30


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.cli batch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="upload a JSONL file and create a batch")
    submit.add_argument("file", type=Path, help="one request per line: custom_id, method, url, body")
    submit.add_argument("--endpoint", choices=ENDPOINTS, default="/v1/chat/completions")
    submit.add_argument("--wait", action="store_true", help="follow the batch and download its files")
    submit.add_argument("--out", type=Path, default=None, help="output folder (default: next to the input)")
    submit.add_argument("--base-url", default="http://127.0.0.1:8000")
    submit.add_argument("--api-key", default=os.environ.get("GENSERVE_API_KEY"))
    submit.add_argument("--poll", type=float, default=1.0, help="seconds between status checks")
    return parser.parse_args(argv)


def bar(batch: dict[str, Any]) -> str:
    counts = batch.get("request_counts") or {}
    total, done = counts.get("total", 0), counts.get("completed", 0) + counts.get("failed", 0)
    filled = BAR * done // total if total else 0
    return (
        f"\r{batch['status']:<11} [{'#' * filled}{'.' * (BAR - filled)}] {done}/{total}"
        f" ({counts.get('failed', 0)} failed)"
    )


class Refused(Exception):
    """The service refused a request (its message is shown, then exit status 2)."""


def _checked(r: httpx.Response) -> dict[str, Any]:
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        raise Refused(f"error {r.status_code}: {message}")
    body: dict[str, Any] = r.json()
    return body


async def submit(
    client: httpx.AsyncClient,
    args: argparse.Namespace,
    *,
    pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    out: TextIO = sys.stderr,
) -> int:
    """Upload, create, and with `--wait` follow and download; returns the exit status."""
    content = args.file.read_bytes()
    uploaded = _checked(
        await client.post("/v1/files", files={"file": (args.file.name, content)}, data={"purpose": "batch"})
    )
    batch = _checked(
        await client.post(
            "/v1/batches",
            json={"input_file_id": uploaded["id"], "endpoint": args.endpoint, "completion_window": "24h"},
        )
    )
    print(batch["id"], file=sys.stdout)
    if not args.wait:
        return 0
    while batch["status"] not in ENDED:
        out.write(bar(batch))
        out.flush()
        await pause(args.poll)
        batch = _checked(await client.get(f"/v1/batches/{batch['id']}"))
    out.write(bar(batch) + "\n")
    folder = args.out or args.file.parent
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("output", "error"):
        file_id = batch.get(f"{kind}_file_id")
        if file_id:
            r = await client.get(f"/v1/files/{file_id}/content")
            if r.status_code >= 400:
                _checked(r)
            path = folder / f"{args.file.stem}.{kind}.jsonl"
            path.write_bytes(r.content)
            out.write(f"{kind}: {path}\n")
    for problem in (batch.get("errors") or {}).get("data") or []:
        out.write(f"line {problem.get('line')}: {problem.get('code')}: {problem.get('message')}\n")
    failed = (batch.get("request_counts") or {}).get("failed", 0)
    return 0 if batch["status"] == "completed" and not failed else 1


async def run(args: argparse.Namespace) -> int:
    if not args.api_key:
        print("an API key is needed: --api-key or GENSERVE_API_KEY", file=sys.stderr)
        return 2
    headers = {"authorization": f"Bearer {args.api_key}"}
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=60) as client:
        return await submit(client, args)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(run(args))
    except (Refused, OSError, httpx.HTTPError) as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
