"""SIGTERM drains the real server: it stops accepting, lets a live stream finish with [DONE]
within the shutdown deadline, cuts what outlives the deadline, and exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.processes import free_port, refused, stop, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-shutdown-test-key-0000"
PROMPT = "a prompt nobody else may read"


@pytest.fixture
def slow_upstream() -> Iterator[int]:
    """The benchmark's fake OpenAI upstream, streaming 60 chunks 50 ms apart (3 s a stream)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.upstream", "--port", str(port), "--chunks", "60"]
    proc = subprocess.Popen([*cmd, "--chunk-delay-ms", "50"], cwd=ROOT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v1/models", proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def start_service(upstream_port: int, shutdown_timeout: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENSERVE_", "OPENAI_"))} | {
        "GENSERVE_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "OPENAI_API_KEY": KEY,
        "GENSERVE_PORT": str(port),
        "GENSERVE_LOG_LEVEL": "INFO",
        "GENSERVE_LOG_FORMAT": "json",
        "GENSERVE_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_until_up(f"http://127.0.0.1:{port}/readyz", proc)
    return proc, port


def test_sigterm_lets_a_live_stream_finish_then_exits(slow_upstream: int) -> None:
    proc, port = start_service(slow_upstream, shutdown_timeout=30)
    events: list[str] = []
    refused_while_streaming = False
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if not events:
                proc.send_signal(signal.SIGTERM)
            events.append(line.removeprefix("data: "))
            if not refused_while_streaming and events[-1] != "[DONE]":
                refused_while_streaming = refused(port)
    err = stop(proc)

    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).count("tok")
        == 60
    )
    assert refused_while_streaming, "new connections were still accepted while draining"
    assert proc.returncode in (0, -signal.SIGTERM)
    lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "genserve.access"]
    assert [(a["route"], a["status"], a["completion_tokens"]) for a in access] == [
        ("/v1/chat/completions", 200, 60)
    ]
    assert any(line["msg"] == "Shutting down" for line in lines)
    assert KEY not in err
    assert PROMPT not in err


def test_the_shutdown_deadline_cuts_what_outlives_it(slow_upstream: int) -> None:
    proc, port = start_service(slow_upstream, shutdown_timeout=1)
    received: list[str] = []

    def stream_and_terminate() -> None:
        body = {"prompt": PROMPT, "stream": True}
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
            client.stream("POST", "/v1/generate", json=body) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data: "):
                    if not received:
                        proc.send_signal(signal.SIGTERM)
                    received.append(line)

    # The stream needs 3 s; the deadline is 1 s: the connection is closed mid-body.
    with pytest.raises(httpx.RemoteProtocolError):
        stream_and_terminate()
    err = stop(proc)
    assert 0 < len(received) < 60
    assert "data: [DONE]" not in received
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "timeout graceful shutdown exceeded" in err
