"""`make chaos`: faults across the whole system under steady load, and what must still hold.

Two replicas (`python -m app`) run in front of a fake OpenAI upstream, on a PostgreSQL and a
Redis that this module starts itself (initdb into a temporary directory, each server on a free
loopback port; the machine's shared servers are left alone). A load driver sends a steady mix
— JSON and streamed generate and chat, conversation turns, a key with limits — while a fixed
schedule injects the faults:

    redis-restart      its Redis is stopped (by PID) and started again on the same port
    postgres-restart   its PostgreSQL is stopped (fast shutdown, by PID) and started again
    upstream-outage    the upstream answers 500 or never answers, for a window
    replica-sigterm    one replica gets SIGTERM while a stream it serves is in flight

Then it asserts, and prints a summary table:

- no request outlives its deadline (the client's bound, from the replicas' settings);
- every failure is a 502, 503 or 504 with `Retry-After` during a fault window (429 for the
  limited key), never a 500, never a hang, and no failure at all outside the windows;
- every answered request is in usage exactly once: per key, usage = the sum of the `usage` the
  client received, requests and tokens;
- no conversation has a half-written turn: its messages alternate user/assistant, one pair per
  turn the client was answered;
- the limited key was never admitted beyond its limits;
- after the last fault, every replica answers every kind of request within `RECOVERY` seconds,
  without a restart.

    python -m tests.system.chaos            # about three minutes
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.private_postgres import PrivatePostgres
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "chaos-admin-token-0123456789abcdef"
MODEL = "gpt-4o-mini"

# -- the replicas' settings, and the bounds that follow from them --------------------------------

UPSTREAM_TIMEOUT = 1.5
"""Seconds one upstream call may take (OPENAI_TIMEOUT)."""
UPSTREAM_DEADLINE = 5.0
"""Seconds one request may spend on upstream attempts and retries (GENSERVE_UPSTREAM_DEADLINE)."""
LOCK_TIMEOUT = 5.0
"""Seconds a turn waits for its conversation (GENSERVE_CONVERSATION_LOCK_TIMEOUT)."""
SHUTDOWN_TIMEOUT = 15
"""Seconds a replica lets in-flight streams finish after SIGTERM (GENSERVE_SHUTDOWN_TIMEOUT)."""
DEADLINE = UPSTREAM_DEADLINE + LOCK_TIMEOUT + 2.0
"""No request may take longer than this: its own deadline, plus waiting for its conversation,
plus two seconds of database and network slack."""
RECOVERY = 10.0
"""After the last fault ends, every replica answers every kind of request within this."""

STREAM_CHUNKS = 20
CHUNK_PAUSE = 0.05
"""A stream takes about a second: long enough for a SIGTERM to land in the middle of one."""
MAX_PROMPT_TOKENS = 64
"""The fake upstream counts 7 + one per message: no request of the load comes near."""
LIMITED_RPM = 12
"""The limited key's requests per minute."""
LIMITED_TOKENS_PER_DAY = 3000
"""The limited key's daily token budget."""


@dataclass(frozen=True)
class Fault:
    name: str
    at: float
    """Seconds after the load started."""
    hold: float
    """Seconds the fault lasts (a server stays down; the upstream keeps failing)."""


#: The schedule: one fault at a time, with quiet time between them to see the recovery.
SCHEDULE = (
    Fault("redis-restart", at=8, hold=3),
    Fault("postgres-restart", at=22, hold=4),
    Fault("upstream-outage", at=38, hold=8),
    Fault("replica-sigterm", at=58, hold=0),
)
LOAD_SECONDS = 75.0
GRACE = RECOVERY
"""A failure up to this long after a fault ended still belongs to it."""


# -- the servers -------------------------------------------------------------------------------


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal a process by its PID and wait for it; kill it when it will not go."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Redis:
    """A private Redis that keeps its data across a restart (append-only file, fsync always),
    as a production Redis holding rate limits would."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(self._ready, 20, "Redis starting")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("Redis exited while starting")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


class Upstream:
    """A fake OpenAI-compatible upstream in a thread, whose answers can be switched to failures."""

    def __init__(self) -> None:
        self.failing = False
        self.port = free_port()
        self.calls = Counter[str]()
        self._server = uvicorn.Server(
            uvicorn.Config(
                Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])]),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self._thread.start()
        _wait(lambda: self._server.started, 20, "the fake upstream starting")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _chat(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if self.failing:
            # Every other call fails loudly, the rest never answer (the replicas time out).
            self.calls["failed"] += 1
            if self.calls["failed"] % 2:
                return JSONResponse({"error": {"message": "upstream down", "type": "server_error"}}, 500)
            await asyncio.sleep(UPSTREAM_TIMEOUT * 4)
            return JSONResponse({"error": {"message": "too late", "type": "server_error"}}, 500)
        self.calls["ok"] += 1
        prompt_tokens = 7 + len(body["messages"])
        if not body.get("stream"):
            return JSONResponse(_completion(body["model"], "Hello from the fake upstream.", prompt_tokens))
        return StreamingResponse(_stream(body["model"], prompt_tokens), media_type="text/event-stream")


def _completion(model: str, text: str, prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-chaos",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 6, "total_tokens": prompt_tokens + 6},
    }


async def _stream(model: str, prompt_tokens: int) -> AsyncIterator[bytes]:
    def frame(payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    head = {
        "id": "chatcmpl-chaos",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    for i in range(STREAM_CHUNKS):
        delta = {"content": f"w{i} "} | ({"role": "assistant"} if i == 0 else {})
        yield frame(head | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        await asyncio.sleep(CHUNK_PAUSE)
    yield frame(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": STREAM_CHUNKS}
    yield frame(head | {"choices": [], "usage": usage | {"total_tokens": sum(usage.values())}})
    yield b"data: [DONE]\n\n"


class Replica:
    """One `python -m app` process."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.env = env
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=ROOT,
                env={**self.env, "GENSERVE_PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait(self._ready, 60, f"replica {self.name} starting")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"replica {self.name} exited while starting; see {self.log}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, timeout=SHUTDOWN_TIMEOUT + 10)


# -- the load ----------------------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    key: str
    replica: str
    started: float
    """Seconds after the load started."""
    elapsed: float
    status: int | None
    """HTTP status; None when no answer came (connection failure, client-side timeout)."""
    retry_after: str | None = None
    error: str | None = None
    usage: tuple[int, int] | None = None
    """(prompt, completion) tokens the client was told it used."""
    shown: bool = False
    """A stream delivered text before it failed: billed for what it produced, by design."""

    @property
    def answered(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class Load:
    base: float
    replicas: list[Replica]
    keys: dict[str, str]
    """Key name → secret."""
    results: list[Result] = field(default_factory=list)
    probes: list[Result] = field(default_factory=list)
    """The recovery probes' requests (billed too, but not part of the load's figures)."""
    turns: dict[str, int] = field(default_factory=dict)
    """Conversation id → turns the client was answered."""
    conversation_keys: dict[str, str] = field(default_factory=dict)
    in_flight_streams: Counter[str] = field(default_factory=Counter)
    draining: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _next: int = 0

    def now(self) -> float:
        return time.monotonic() - self.base

    def pick(self) -> Replica:
        """Round robin over the replicas in rotation, as a load balancer would."""
        live = [r for r in self.replicas if r.name not in self.draining]
        self._next += 1
        return live[self._next % len(live)]

    async def send(
        self,
        client: httpx.AsyncClient,
        kind: str,
        key: str,
        path: str,
        body: dict[str, Any] | None,
        stream: bool = False,
        replica: Replica | None = None,
    ) -> tuple[Result, Any]:
        replica = replica or self.pick()
        result = Result(kind, key, replica.name, self.now(), 0.0, None)
        headers = {"authorization": f"Bearer {self.keys[key]}"}
        payload: Any = None
        try:
            async with asyncio.timeout(DEADLINE + 5):  # past the deadline: a hang, not a slow answer
                if stream:
                    self.in_flight_streams[replica.name] += 1
                    try:
                        payload = await _read_stream(client, replica.url + path, body, headers, result)
                    finally:
                        self.in_flight_streams[replica.name] -= 1
                else:
                    method = "POST" if body is not None else "GET"
                    r = await client.request(method, replica.url + path, json=body, headers=headers)
                    result.status = r.status_code
                    result.retry_after = r.headers.get("retry-after")
                    payload = r.json()
                    if r.status_code >= 400:
                        result.error = payload.get("error", {}).get("code") or "error"
                    elif isinstance(payload.get("usage"), dict):
                        result.usage = (
                            payload["usage"]["prompt_tokens"],
                            payload["usage"]["completion_tokens"],
                        )
        except TimeoutError:
            result.error = "hang"
        except httpx.TransportError as exc:
            result.error = f"transport: {type(exc).__name__}"
        result.elapsed = self.now() - result.started
        (self.probes if kind == "probe" else self.results).append(result)
        return result, payload


async def _read_stream(
    client: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str], result: Result
) -> list[Any]:
    events: list[Any] = []
    async with client.stream("POST", url, json=body, headers=headers) as r:
        result.status = r.status_code
        result.retry_after = r.headers.get("retry-after")
        if r.status_code != 200:
            payload = json.loads(await r.aread())
            result.error = payload.get("error", {}).get("code") or "error"
            return [payload]
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    if not events or events[-1] != "[DONE]":
        result.error = "stream cut"
        return events
    for event in events:
        if isinstance(event, dict) and "error" in event:
            result.error = f"stream error: {event['error'].get('code')}"
        elif isinstance(event, dict) and (event.get("text") or event.get("choices")):
            result.shown = True
        usage = event.get("usage") if isinstance(event, dict) else None
        if isinstance(usage, dict):
            result.usage = (usage["prompt_tokens"], usage["completion_tokens"])
    return events


async def _worker(load: Load, client: httpx.AsyncClient, n: int) -> None:
    """One client's loop: a fixed rotation through the request kinds."""
    prompt = {"prompt": "Say hello.", "model": MODEL, "max_tokens": 32}
    messages = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32}
    kinds = ["generate", "chat-stream", "chat", "generate-stream"]
    i = n
    while not load.stop.is_set():
        kind = kinds[i % len(kinds)]
        i += 1
        if kind == "generate":
            await load.send(client, kind, "plain", "/v1/generate", prompt)
        elif kind == "generate-stream":
            await load.send(client, kind, "plain", "/v1/generate", prompt | {"stream": True}, stream=True)
        elif kind == "chat":
            await load.send(client, kind, "plain", "/v1/chat/completions", messages)
        else:
            body = messages | {"stream": True, "stream_options": {"include_usage": True}}
            await load.send(client, kind, "plain", "/v1/chat/completions", body, stream=True)
        await asyncio.sleep(0.05)


async def _conversations(load: Load, client: httpx.AsyncClient) -> None:
    """Turns of a few conversations, one turn at a time each, alternating replicas."""
    conversation: str | None = None
    turns = 0
    while not load.stop.is_set():
        if conversation is None or turns >= 6:
            result, payload = await load.send(
                client, "conversation-create", "plain", "/v1/conversations", {"model": MODEL}
            )
            if result.status != 200:
                await asyncio.sleep(0.2)
                continue
            conversation, turns = payload["id"], 0
            load.turns[conversation] = 0
            load.conversation_keys[conversation] = "plain"
        stream = turns % 2 == 1
        result, _ = await load.send(
            client,
            "turn-stream" if stream else "turn",
            "plain",
            f"/v1/conversations/{conversation}/messages",
            {"content": f"turn {turns}", "max_tokens": 32, "stream": stream},
            stream=stream,
        )
        turns += 1
        if result.answered:
            load.turns[conversation] += 1
        await asyncio.sleep(0.1)


async def _limited(load: Load, client: httpx.AsyncClient) -> None:
    """A key with limits, asked more often than they allow."""
    body = {"prompt": "Say hello.", "model": MODEL, "max_tokens": 40}
    while not load.stop.is_set():
        await load.send(client, "limited", "limited", "/v1/generate", body)
        await asyncio.sleep(0.5)


# -- the faults --------------------------------------------------------------------------------


@dataclass
class Window:
    fault: Fault
    start: float
    end: float = float("inf")
    failures: Counter[str] = field(default_factory=Counter)
    """Failed requests by status (or by the error inside a stream)."""
    recovered: float = 0.0
    """Seconds from the fault's end to the end of its last failed request."""


async def _inject(
    load: Load, postgres: PrivatePostgres, redis: Redis, upstream: Upstream, windows: list[Window]
) -> None:
    for fault in SCHEDULE:
        await asyncio.sleep(max(0.0, fault.at - load.now()))
        window = Window(fault, load.now())
        windows.append(window)
        print(f"{window.start:6.1f} s  {fault.name}", flush=True)
        if fault.name == "redis-restart":
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(fault.hold)
            await asyncio.to_thread(redis.start)
        elif fault.name == "postgres-restart":
            await asyncio.to_thread(postgres.stop)
            await asyncio.sleep(fault.hold)
            await asyncio.to_thread(postgres.start)
        elif fault.name == "upstream-outage":
            upstream.failing = True
            await asyncio.sleep(fault.hold)
            upstream.failing = False
        elif fault.name == "replica-sigterm":
            victim = load.replicas[-1]
            # Mid-stream: wait (bounded) until a stream on it is in flight, then take it out of
            # the rotation, as a load balancer draining it would, and send the signal.
            for _ in range(100):
                if load.in_flight_streams[victim.name] > 0:
                    break
                await asyncio.sleep(0.05)
            streams = load.in_flight_streams[victim.name]
            load.draining.add(victim.name)
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGTERM)
            print(f"{load.now():6.1f} s  SIGTERM to replica {victim.name} with {streams} stream(s) in flight")
            code = await asyncio.to_thread(victim.proc.wait, SHUTDOWN_TIMEOUT + 10)
            print(f"{load.now():6.1f} s  replica {victim.name} exited with {code}")
            await asyncio.to_thread(victim.start)
            load.draining.discard(victim.name)
        window.end = load.now()
        print(f"{window.end:6.1f} s  {fault.name} over", flush=True)


# -- the checks --------------------------------------------------------------------------------


def _window_of(result: Result, windows: list[Window]) -> Window | None:
    """The fault a failure belongs to: the latest one that began before the request ended and
    had not been over for longer than `GRACE` when it started."""
    for w in reversed(windows):
        if w.start - 0.5 <= result.started + result.elapsed and result.started <= w.end + GRACE:
            return w
    return None


async def _usage(url: str, secret: str) -> tuple[int, int, int]:
    """The key's recorded usage, read through the admin API: `GET /v1/usage` counts against the
    key's own request limit, which the limited key has long spent."""
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(timeout=30, headers=admin) as client:
        keys = (await client.get(f"{url}/admin/keys")).raise_for_status().json()["data"]
        [key_id] = [k["id"] for k in keys if secret.startswith(k["hint"])]
        r = (await client.get(f"{url}/admin/usage", params={"key_id": key_id})).raise_for_status()
    t = r.json()["totals"]
    return t["requests"], t["prompt_tokens"], t["completion_tokens"]


async def _history(url: str, secret: str, conversation: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    before: int | None = None
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {secret}"}) as client:
        while True:
            params = {"limit": 100} | ({"before": before} if before else {})
            r = await client.get(f"{url}/v1/conversations/{conversation}", params=params)
            r.raise_for_status()
            page = r.json()
            messages = page["messages"] + messages
            if not page["has_more"] or not page["messages"]:
                return messages
            before = page["messages"][0]["seq"]


async def _recovered(load: Load) -> float:
    """Seconds until every replica answers every kind of request again (bounded)."""
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        while time.monotonic() - start < RECOVERY * 3:
            ok = True
            for replica in load.replicas:
                for kind, path, body, stream in (
                    ("probe", "/v1/generate", {"prompt": "hi", "model": MODEL}, False),
                    (
                        "probe",
                        "/v1/chat/completions",
                        {
                            "model": MODEL,
                            "messages": [{"role": "user", "content": "hi"}],
                            "stream": True,
                            "stream_options": {"include_usage": True},
                        },
                        True,
                    ),
                    ("probe", "/v1/conversations", {"model": MODEL}, False),
                ):
                    result, _ = await load.send(
                        client, kind, "plain", path, body, stream=stream, replica=replica
                    )
                    ok = ok and result.status == 200 and result.error is None
            if ok:
                return time.monotonic() - start
            await asyncio.sleep(0.5)
    return float("inf")


def _summary(load: Load, windows: list[Window], lost: int, recovery: float, problems: list[str]) -> str:
    rows = [("faults injected", str(len(windows)))]
    for w in windows:
        rows.append(
            (
                f"  {w.fault.name}",
                f"at {w.start:.0f} s for {w.end - w.start:.1f} s: {w.failures.total()} failed "
                f"({', '.join(f'{n} × {what}' for what, n in sorted(w.failures.items())) or 'none'}), "
                f"all answered again {w.recovered:.1f} s after",
            )
        )
    rows.append(("requests", str(len(load.results))))
    answered = sum(r.answered for r in load.results)
    rows.append(("answered", str(answered)))
    by_status = Counter(
        str(r.status) if r.status is not None else (r.error or "none")
        for r in load.results
        if not r.answered and r.status != 200
    )
    for status, count in sorted(by_status.items()):
        rows.append((f"failed: {status}", str(count)))
    stream_errors = Counter(r.error for r in load.results if r.status == 200 and r.error)
    for error, count in sorted(stream_errors.items()):
        rows.append((f"failed in stream: {error}", str(count)))
    slowest = max((r.elapsed for r in load.results), default=0.0)
    rows.append(("slowest request", f"{slowest:.1f} s (deadline {DEADLINE:.0f} s)"))
    rows.append(("conversations", f"{len(load.turns)} ({sum(load.turns.values())} turns answered)"))
    rows.append(("probes answered after the run", f"every replica, every kind, in {recovery:.1f} s"))
    rows.append(("lost", str(lost)))
    rows.append(("assertions failed", str(len(problems))))
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'what':{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:{width}} | {v} |" for k, v in rows]
    return "\n".join(lines)


async def _check(load: Load, windows: list[Window], recovery: float) -> tuple[list[str], int]:
    problems: list[str] = []
    for r in load.results:
        where = f"{r.kind} on {r.replica} at {r.started:.1f} s"
        if r.error == "hang" or r.elapsed > DEADLINE:
            problems.append(f"{where}: took {r.elapsed:.1f} s, past the {DEADLINE:.0f} s deadline")
        if r.answered:
            continue
        if r.status == 429 and r.key == "limited":
            if r.retry_after is None:
                problems.append(f"{where}: 429 without Retry-After")
            continue
        window = _window_of(r, windows)
        if window is None:
            problems.append(f"{where}: failed outside any fault ({r.status}, {r.error})")
            continue
        window.failures[str(r.status) if r.status != 200 else str(r.error)] += 1
        window.recovered = max(window.recovered, r.started + r.elapsed - window.end)
        if r.status == 200:
            if not (r.error or "").startswith("stream error"):
                problems.append(f"{where}: stream ended badly during {window.fault.name} ({r.error})")
        elif r.status not in (502, 503, 504):
            problems.append(f"{where}: {r.status} ({r.error}) during {window.fault.name}")
        elif r.retry_after is None:
            problems.append(f"{where}: {r.status} ({r.error}) without Retry-After")

    # Usage: what the clients were told, key by key, against what the service recorded.
    lost = 0
    url = load.replicas[0].url
    for key, secret in load.keys.items():
        mine = [r for r in load.results + load.probes if r.key == key]
        told = [r.usage for r in mine if r.answered and r.usage]
        # A stream that failed after showing text is billed for what it produced (never free),
        # which its client cannot know exactly: at most a prompt and a whole reply.
        cut = sum(1 for r in mine if not r.answered and r.shown)
        # A replica writes its counts every second, and before answering a usage query: ask each.
        for replica in load.replicas:
            requests, prompt, completion = await _usage(replica.url, secret)
        extra = prompt + completion - sum(p + c for p, c in told)
        if requests != len(told) + cut or not 0 <= extra <= cut * (MAX_PROMPT_TOKENS + STREAM_CHUNKS):
            lost += abs(requests - len(told) - cut)
            problems.append(
                f"usage of key {key}: {requests} requests and {prompt + completion} tokens recorded; "
                f"clients were answered {len(told)} times for {prompt + completion - extra} tokens, "
                f"and {cut} streams were cut after some text (recorded prompt {prompt}, completion "
                f"{completion}; told {sum(p for p, _ in told)}, {sum(c for _, c in told)})"
            )

    # Conversations: whole turns only, one pair per answered turn.
    for conversation, answered in load.turns.items():
        messages = await _history(url, load.keys[load.conversation_keys[conversation]], conversation)
        roles = [m["role"] for m in messages]
        if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
            problems.append(f"conversation {conversation} has a half-written turn: {roles}")
        elif len(roles) // 2 != answered:
            lost += abs(len(roles) // 2 - answered)
            problems.append(
                f"conversation {conversation}: {len(roles) // 2} turns stored, {answered} answered"
            )

    # The limited key: never more requests than the bucket allows, never past its token budget.
    limited = [r for r in load.results if r.key == "limited" and r.answered]
    span = max((r.started for r in limited), default=0.0) - min((r.started for r in limited), default=0.0)
    allowed = LIMITED_RPM + LIMITED_RPM * span / 60
    if len(limited) > allowed:
        problems.append(
            f"the limited key was answered {len(limited)} times in {span:.0f} s (> {allowed:.0f})"
        )
    tokens = sum(p + c for r in limited if r.usage for p, c in [r.usage])
    if tokens > LIMITED_TOKENS_PER_DAY:
        problems.append(f"the limited key used {tokens} tokens; its day allows {LIMITED_TOKENS_PER_DAY}")

    for w in windows:
        if w.recovered > RECOVERY:
            problems.append(f"{w.fault.name}: requests failed until {w.recovered:.1f} s after it ended")
    if recovery > RECOVERY:
        problems.append(f"after the run, the replicas took {recovery:.1f} s to answer every kind of request")
    return problems, lost


# -- the run -----------------------------------------------------------------------------------


async def _create_key(url: str, name: str, limits: dict[str, int] | None = None) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            f"{url}/admin/keys",
            json={"name": name, "limits": limits or {}},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


async def _database(postgres: PrivatePostgres) -> str:
    conn = await asyncpg.connect(postgres.url)
    try:
        await conn.execute("CREATE DATABASE genserve")
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/genserve"


async def _run(postgres: PrivatePostgres, redis: Redis, upstream: Upstream, replicas: list[Replica]) -> int:
    keys = {
        "plain": await _create_key(replicas[0].url, "chaos"),
        "limited": await _create_key(
            replicas[1].url,
            "chaos-limited",
            {"requests_per_minute": LIMITED_RPM, "tokens_per_day": LIMITED_TOKENS_PER_DAY},
        ),
    }
    load = Load(base=time.monotonic(), replicas=replicas, keys=keys)
    windows: list[Window] = []
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=DEADLINE + 10, limits=limits) as client:
        tasks = [asyncio.create_task(_worker(load, client, n)) for n in range(6)]
        tasks += [asyncio.create_task(_conversations(load, client)) for _ in range(2)]
        tasks.append(asyncio.create_task(_limited(load, client)))
        try:
            await _inject(load, postgres, redis, upstream, windows)
            await asyncio.sleep(max(0.0, LOAD_SECONDS - load.now()))
        finally:
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DEADLINE + 15)
    recovery = await _recovered(load)
    problems, lost = await _check(load, windows, recovery)
    print()
    print(_summary(load, windows, lost, recovery, problems))
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


def main() -> int:
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="genserve-chaos-"))
    postgres = redis = upstream = None
    replicas: list[Replica] = []
    code = 1
    try:
        postgres, redis, upstream = PrivatePostgres(root, max_connections=200), Redis(root), Upstream()
        postgres.start()
        redis.start()
        upstream.start()
        database = asyncio.run(_database(postgres))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GENSERVE_", "OPENAI_"))} | {
            "GENSERVE_PROVIDER": "openai",
            "GENSERVE_OPENAI_MODELS": MODEL,
            "OPENAI_BASE_URL": upstream.url,
            "OPENAI_API_KEY": "sk-chaos",
            "GENSERVE_OPENAI_TIMEOUT": str(UPSTREAM_TIMEOUT),
            "GENSERVE_OPENAI_MAX_RETRIES": "1",
            "GENSERVE_RETRY_BACKOFF": "0.1",
            "GENSERVE_UPSTREAM_DEADLINE": str(UPSTREAM_DEADLINE),
            "GENSERVE_CONVERSATION_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
            "GENSERVE_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
            "GENSERVE_CIRCUIT_COOLDOWN": "2",
            "GENSERVE_CACHE_ENABLED": "false",
            "DATABASE_URL": database,
            "REDIS_URL": redis.url,
            "GENSERVE_AUTH_MODE": "keys",
            "GENSERVE_ADMIN_TOKEN": ADMIN,
            "GENSERVE_LOG_LEVEL": "WARNING",
            "GENSERVE_DATA_DIR": str(root / "data"),
        }
        for name in ("a", "b"):  # one after the other: the first applies the migrations
            replica = Replica(name, env, root / f"replica-{name}.log")
            replicas.append(replica)
            replica.start()
        code = asyncio.run(_run(postgres, redis, upstream, replicas))
        print(f"\nchaos run: {time.monotonic() - started:.0f} s")
        return code
    finally:
        for replica in replicas:
            replica.stop()
        for server in (upstream, redis, postgres):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        if code == 0:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for replica in replicas:
                lines = replica.log.read_text(errors="replace").splitlines()
                print(f"\nthe last lines of replica {replica.name}'s log ({replica.log}):")
                print("\n".join(line[:400] for line in lines[-15:]))


if __name__ == "__main__":
    sys.exit(main())
