"""`python -m app.cli batch submit ... --wait`: a user submits a JSONL file, watches the progress
bar move to `completed`, and finds the output and error files next to the input."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import respx

from app.cli import batch as cli
from tests.access_helpers import completion, create_key, keys_app, running


def lines(*texts: str) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"c{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
            }
        ).encode()
        + b"\n"
        for n, text in enumerate(texts)
    )


async def test_submit_and_wait_downloads_the_results(tmp_path: Path, upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion("done"))
    source = tmp_path / "work.jsonl"
    source.write_bytes(lines("one", "two", "three"))
    pauses: list[float] = []

    async with running(keys_app(database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")) as client:
        _, secret = await create_key(client, name="cli")
        client.headers["authorization"] = f"Bearer {secret}"
        progress = io.StringIO()

        async def pause(seconds: float) -> None:  # the service's own worker runs meanwhile
            pauses.append(seconds)
            await asyncio.sleep(0.01)

        args = cli.parse(["submit", str(source), "--endpoint", "/v1/chat/completions", "--wait"])
        status = await cli.submit(client, args, pause=pause, out=progress)

    assert status == 0
    assert pauses  # it waited between status checks
    assert "completed" in progress.getvalue()
    assert "3/3 (0 failed)" in progress.getvalue()
    results = [json.loads(row) for row in (tmp_path / "work.output.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in results] == ["c0", "c1", "c2"]
    assert not (tmp_path / "work.error.jsonl").exists()


def test_the_bar_shows_progress() -> None:
    shown = cli.bar({"status": "in_progress", "request_counts": {"total": 10, "completed": 4, "failed": 1}})
    assert "#" * 15 in shown
    assert "5/10 (1 failed)" in shown


def test_without_a_key_it_says_what_is_missing(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(lines("x"))
    assert cli.main(["submit", str(source), "--api-key", ""]) == 2
