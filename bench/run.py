"""`make bench`: the same scenarios directly against a fake upstream and through the service,
alternating in one run, printed as one table and written to `docs/benchmarks.md`.

Every load runs on 127.0.0.1. Environment:
    BENCH_QUICK=1      ~3 s per scenario instead of 15 s (for development)
    BENCH_OUT=path     where to write the Markdown report (default docs/benchmarks.md; "-" for none)
    BENCH_LOCAL=0      skip the embedded-model comparison
    BENCH_ONLY=c16,s1  run only these scenarios (c1 c16 c64: plain; s1 s16: streams; floor; local)
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
DURATION = 3.0 if QUICK else 15.0
CHUNKS = 64
SSE_CLIENT = [PY, "-m", "bench.sse"]
SOAK_REQUESTS = 0 if QUICK else 100_000
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))


def wanted(scenario: str) -> bool:
    return not ONLY or scenario in ONLY


CHAT_BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]})
GENERATE_BODY = orjson.dumps({"model": "gpt-4o-mini", "prompt": "Say hello."})

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


@dataclass
class Load:
    """One measured run: latency percentiles in ms, throughput, and the service's CPU."""

    requests: int
    seconds: float
    p50: float
    p90: float
    p99: float
    errors: int
    cpu_ms_per_request: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


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
    load = Load(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        p50=r["p50"] / 1000,
        p90=r["p90"] / 1000,
        p99=r["p99"] / 1000,
        errors=r["errors"] + r["non2xx"],
    )
    if cpu is not None and load.requests:
        load.cpu_ms_per_request = 1000 * cpu / load.requests
    return load


@dataclass
class StreamLoad:
    streams: int
    seconds: float
    ttfb_p50: float
    ttfb_p99: float
    total_p50: float
    total_p99: float
    frames: float
    errors: int
    cpu_ms_per_stream: float | None = None


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
    load = StreamLoad(**{k: r[k] for k in StreamLoad.__dataclass_fields__ if k in r})
    if cpu is not None and load.streams:
        load.cpu_ms_per_stream = 1000 * cpu / load.streams
    return load


@dataclass
class Report:
    plain: list[tuple[str, int, Load, Load]] = field(default_factory=list)
    streams: list[tuple[str, int, StreamLoad, StreamLoad]] = field(default_factory=list)
    rss: list[tuple[str, int, float]] = field(default_factory=list)
    local: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    floor: list[tuple[int, Load, Load]] = field(default_factory=list)
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


def measure() -> Report:
    report = Report(load_before=loadavg())
    up_port, svc_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    service = f"http://127.0.0.1:{svc_port}"
    env = {
        "GENSERVE_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "GENSERVE_OPENAI_MODELS": "gpt-4o-mini",
        "GENSERVE_HOST": "127.0.0.1",
        "GENSERVE_PORT": str(svc_port),
        # Production defaults: one JSON access line per request, written to a file.
        "GENSERVE_LOG_LEVEL": "INFO",
        "GENSERVE_LOG_FORMAT": "json",
    }
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        with (
            process([PY, "-m", "bench.upstream", "--port", str(up_port), "--chunks", str(CHUNKS)]),
            process([PY, "-m", "app"], env=env, ready=f"{service}/readyz") as pid,
        ):
            wait_ready(f"{upstream}/v1/models")
            direct_url = f"{upstream}/v1/chat/completions"
            routes = [("chat", f"{service}/v1/chat/completions", CHAT_BODY)]
            routes.append(("generate", f"{service}/v1/generate", GENERATE_BODY))
            served = 0
            # Warm up both paths (connection pools, lazy imports, tokenizer).
            for _, url, body in routes:
                served += wrk(url, body, 4, 1.0, None, script).requests
            report.rss.append(("after warm-up", served, rss_mb(pid)))
            for concurrency in (1, 16, 64):
                if not wanted(f"c{concurrency}"):
                    continue
                for name, url, body in routes:
                    direct = wrk(direct_url, CHAT_BODY, concurrency, DURATION, None, script)
                    through = wrk(url, body, concurrency, DURATION, pid, script)
                    served += through.requests
                    report.plain.append((name, concurrency, direct, through))
                    print(f"  {name} c={concurrency}: {through.rps:.0f} req/s", file=sys.stderr)
            report.rss.append(("after the plain scenarios", served, rss_mb(pid)))
            stream_direct_body = orjson.dumps({**orjson.loads(CHAT_BODY), "stream": True})
            for concurrency in (1, 16):
                if not wanted(f"s{concurrency}"):
                    continue
                for name, url, body in routes:
                    stream_body = orjson.dumps({**orjson.loads(body), "stream": True})
                    direct_s = sse(direct_url, stream_direct_body, concurrency, DURATION, None)
                    through_s = sse(url, stream_body, concurrency, DURATION, pid)
                    report.streams.append((name, concurrency, direct_s, through_s))
                    print(f"  {name} stream c={concurrency}: {through_s.streams} streams", file=sys.stderr)
            report.rss.append(("after the streams", served, rss_mb(pid)))
            if served < SOAK_REQUESTS and not ONLY:
                # Keep going until 100k requests have been served, to show memory stays flat.
                while served < SOAK_REQUESTS:
                    seconds = max(5.0, (SOAK_REQUESTS - served) / 600)
                    served += wrk(routes[0][1], CHAT_BODY, 64, seconds, None, script).requests
                report.rss.append(("after the soak", served, rss_mb(pid)))
            if wanted("floor"):
                report.floor = floor(upstream, direct_url, script)
        if os.environ.get("BENCH_LOCAL", "1") != "0" and wanted("local"):
            report.local = local_model()
    report.load_after = loadavg()
    return report


def floor(upstream: str, direct_url: str, script: Path) -> list[tuple[int, Load, Load]]:
    """`bench/floor.py` (FastAPI + the SDK, nothing else) on the same upstream, alternating."""
    port = free_port()
    args = [PY, "-m", "bench.floor", "--port", str(port), "--upstream", f"{upstream}/v1"]
    results = []
    with process(args, ready=f"http://127.0.0.1:{port}/readyz") as pid:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk(url, CHAT_BODY, 4, 1.0, None, script)
        for concurrency in (1, 16):
            direct = wrk(direct_url, CHAT_BODY, concurrency, DURATION, None, script)
            results.append((concurrency, direct, wrk(url, CHAT_BODY, concurrency, DURATION, pid, script)))
            print(f"  floor c={concurrency}: {results[-1][2].rps:.0f} req/s", file=sys.stderr)
        rss = rss_mb(pid)
    print(f"  floor RSS: {rss:.1f} MB", file=sys.stderr)
    return results


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


def _ms(x: float) -> str:
    return f"{x:.2f}"


def render(report: Report) -> str:
    lines = [
        "### Plain requests (wrk, closed loop; added = through the service minus direct, per percentile)",
        "",
        "| endpoint | c | direct p50 / p99 ms | added p50 | added p90 | added p99 | req/s | "
        "direct req/s | ratio | service CPU ms/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c, d, t in report.plain:
        lines.append(
            f"| {name} | {c} | {_ms(d.p50)} / {_ms(d.p99)} | {_ms(t.p50 - d.p50)} | {_ms(t.p90 - d.p90)} | "
            f"{_ms(t.p99 - d.p99)} | {t.rps:,.0f} | {d.rps:,.0f} | {t.rps / d.rps:.3f} | "
            f"{_ms(t.cpu_ms_per_request or 0)} | {t.errors} |"
        )
    lines += [
        "",
        f"### Streams of {CHUNKS} chunks (asyncio SSE client, closed loop)",
        "",
        "| endpoint | c | direct TTFB p50 ms | added TTFB p50 / p99 | direct total p50 ms | "
        "added total p50 / p99 | streams/s | frames/stream | service CPU ms/stream | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c, ds, ts in report.streams:
        lines.append(
            f"| {name} | {c} | {_ms(ds.ttfb_p50)} | {_ms(ts.ttfb_p50 - ds.ttfb_p50)} / "
            f"{_ms(ts.ttfb_p99 - ds.ttfb_p99)} | {_ms(ds.total_p50)} | {_ms(ts.total_p50 - ds.total_p50)} / "
            f"{_ms(ts.total_p99 - ds.total_p99)} | {ts.streams / ts.seconds:,.0f} | {ts.frames:.0f} | "
            f"{_ms(ts.cpu_ms_per_stream or 0)} | {ts.errors} |"
        )
    if report.floor:
        lines += [
            "",
            "### The floor: FastAPI + one shared `AsyncOpenAI` and nothing else (`bench/floor.py`)",
            "",
            "| c | added p50 | added p99 | req/s | CPU ms/req | genserve chat CPU ms/req "
            "| genserve / floor CPU |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        ours = {c: t for name, c, _, t in report.plain if name == "chat"}
        for c, d, t in report.floor:
            mine = ours.get(c)
            floor_cpu = t.cpu_ms_per_request or 0
            mine_cpu = mine.cpu_ms_per_request if mine and mine.cpu_ms_per_request else None
            lines.append(
                f"| {c} | {_ms(t.p50 - d.p50)} | {_ms(t.p99 - d.p99)} | {t.rps:,.0f} | {_ms(floor_cpu)} | "
                + (f"{_ms(mine_cpu)} | {mine_cpu / floor_cpu:.2f} |" if mine_cpu and floor_cpu else "– | – |")
            )
    lines += ["", "### Service memory (RSS, OpenAI provider)", "", "| when | requests served | RSS MB |"]
    lines.append("|---|---:|---:|")
    for when, served, mb in report.rss:
        lines.append(f"| {when} | {served:,} | {mb:.1f} |")
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
    return "\n".join(lines)


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    started = datetime.datetime.now(datetime.UTC)
    report = measure()
    table = render(report)
    print(table)
    out = os.environ.get("BENCH_OUT", str(ROOT / "docs" / "benchmarks.md"))
    if out == "-":
        return
    header = [
        "",
        f"Run: {started:%Y-%m-%d %H:%M} UTC, {'quick (3 s per scenario)' if QUICK else '15 s per scenario'}, "
        "one uvicorn worker (uvloop, httptools), the OpenAI provider against `bench/upstream.py` "
        "(no delay), wrk and the upstream on the same machine.",
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
