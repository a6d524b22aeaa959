"""`make image-test`: build the container image and use it the way the README tells a user to.

1. Build both targets (the embedded model, and `upstream`) from a copy of the clone's files, then
   rebuild after a code-only change: the dependency layers must come from the cache. Prints the
   build times and the image sizes, and holds the sizes to their budgets.
2. Run the image with a copied .env.example (`docker run --env-file .env`) and check, through the
   published port: /readyz, /v1/generate, a streamed chat (the official SDK), a conversation; uid
   10001; the HEALTHCHECK; the conversation still there after the container is recreated on the
   same volume; a stream that finishes (`data: [DONE]`) when SIGTERM arrives in the middle of it.
3. `compose up -d genserve` from a fresh copy of the clone with a copied .env.example: the same.

Engines: `docker` when its engine answers; otherwise the tools in ../shared/container (buildah
builds the Dockerfile, podman runs it; see their README) with podman-compose from the venv.
Neither: this fails, unless IMAGE_TEST_SKIP=1 says to skip. Everything started is stopped and
removed by name on exit; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[2]
TAG = "genserve:image-test"
TAG_UPSTREAM = "genserve:image-test-upstream"
BASE_IMAGE = "python:3.11-slim-bookworm"
MB = 1_000_000
# What each image may add to its base, which differs by where it comes from (the official
# python:3.11-slim-bookworm is about 150 MB; ../shared/container builds a 199 MB stand-in). The
# targets are 300 and 100 MB of the image's own layers: 450 and 250 MB in all on the official
# base. The bias probes' dependencies (numpy, scipy, jieba, lexicons: about 150 MB) are left out
# unless the image is built with --build-arg PROBES=true.
SIZE_LIMIT = {TAG: 300 * MB, TAG_UPSTREAM: 100 * MB}
BUILD_TIMEOUT = 45 * 60  # a cold build compiles llama.cpp: 8-11 minutes on 2 free cores
READY_TIMEOUT = 180
HTTP_TIMEOUT = 120.0
RUN_ID = uuid.uuid4().hex[:8]


def say(message: str) -> None:
    print(f"image-test: {message}", flush=True)


class CheckFailed(Exception):
    """A check that a user would notice failed."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# -- commands -------------------------------------------------------------------------------------


def run(
    args: list[str],
    *,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    log: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion within `timeout`; its output is kept (and written to `log`)."""
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from exc
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    if check and done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise CheckFailed(f"`{' '.join(args)}` exited {done.returncode}:\n{tail}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.5) -> float:
    """Poll `probe` until it is true; the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(interval)
    raise CheckFailed(f"{what}: not within {timeout:.0f} s")


# -- engines --------------------------------------------------------------------------------------


@dataclass
class Engine:
    """The container tools: docker (with its compose plugin) or buildah + podman + podman-compose."""

    cli: str
    env: dict[str, str]
    compose: list[str] | None
    build_script: Path | None = None
    """../shared/container/build.sh, when building with buildah."""

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return run([self.cli, *args], env=self.env, timeout=timeout, check=check).stdout.strip()

    def build(self, context: Path, tag: str, *extra: str, log: Path) -> float:
        start = time.monotonic()
        if self.build_script is not None:
            args = [str(self.build_script), str(context), tag, *extra]
        else:
            args = ["docker", "build", "--progress=plain", "-t", tag, *extra, str(context)]
        run(args, env=self.env, timeout=BUILD_TIMEOUT, log=log)
        return time.monotonic() - start

    def size(self, image: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", image))

    def healthy(self, container: str) -> bool:
        """One run of the image's HEALTHCHECK. podman runs it on demand; docker on its own
        schedule (every 15 s here), so with docker this reads the latest verdict."""
        if self.cli == "podman":
            return run(["podman", "healthcheck", "run", container], env=self.env, check=False).returncode == 0
        status = self("inspect", "--format", "{{.State.Health.Status}}", container, check=False)
        return status == "healthy"


def ran_steps(build_log: str) -> list[str]:
    """The RUN steps a build executed rather than took from its cache."""
    lines = build_log.splitlines()
    ran = []
    for i, line in enumerate(lines):
        # buildah: "[4/8] STEP 3/3: RUN ..." then "--> Using cache ..." when cached
        step = re.match(r"^\[\d+/\d+\] STEP \d+/\d+: (RUN .*)", line)
        if step and not (i + 1 < len(lines) and lines[i + 1].startswith("--> Using cache")):
            ran.append(step.group(1))
        # docker (BuildKit, plain progress): "#12 [deps 3/3] RUN ..." then "#12 CACHED"
        step = re.match(r"^(#\d+) \[[^\]]+\] (RUN .*)", line)
        if step and f"{step.group(1)} CACHED" not in lines:
            ran.append(step.group(2))
    return ran


def find_engine() -> Engine | None:
    env = dict(os.environ)
    if shutil.which("docker") and run(["docker", "info"], check=False, timeout=30).returncode == 0:
        compose = ["docker", "compose"]
        if run([*compose, "version"], check=False, timeout=30).returncode != 0:
            say("docker has no compose plugin: the compose checks are left out")
            return Engine("docker", env, None)
        return Engine("docker", env, compose)
    tools = Path(os.environ.get("GENSERVE_CONTAINER_TOOLS", ROOT.parent / "shared" / "container"))
    if not (tools / "build.sh").is_file():
        return None
    say(f"no Docker engine answers; building with {tools}/build.sh (buildah) and running with podman")
    env.setdefault("CONTAINERS_CONF", str(tools / "containers.conf"))
    env["BUILDAH_ISOLATION"] = "chroot"
    # podman-compose builds with `podman build`, whose default OCI format would drop HEALTHCHECK.
    env["BUILDAH_FORMAT"] = "docker"
    podman_compose = Path(sys.executable).parent / "podman-compose"
    return Engine("podman", env, [str(podman_compose)], build_script=tools / "build.sh")


# -- what gets started, and its removal ---------------------------------------------------------


@dataclass
class Started:
    """Everything this run started, removed by name on exit (whatever happened)."""

    engine: Engine
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    projects: list[tuple[Path, str]] = field(default_factory=list)

    def clean_up(self) -> None:
        for directory, project in self.projects:
            with suppress(CheckFailed):
                compose(self.engine, directory, project, "down", "--volumes", timeout=120, check=False)
        for name in self.containers:
            with suppress(CheckFailed):
                self.engine("rm", "--force", "--volumes", name, timeout=60, check=False)
        for name in self.volumes:
            with suppress(CheckFailed):
                self.engine("volume", "rm", "--force", name, timeout=60, check=False)


def compose(
    engine: Engine, directory: Path, project: str, *args: str, timeout: float = 300, check: bool = True
) -> str:
    assert engine.compose is not None
    args_ = [*engine.compose, "--project-name", project, *args]
    return run(args_, env=engine.env, cwd=directory, timeout=timeout, check=check).stdout


def copy_of_the_clone(destination: Path) -> Path:
    """The files a fresh clone has (tracked, or new and not ignored), and nothing else: no .env,
    no .venv, no data."""
    listed = run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


# -- the checks through the published port ---------------------------------------------------------


@dataclass
class Deployment:
    """A running service: its URL on the host, and how to find, recreate and stop its container."""

    engine: Engine
    url: str
    container: Callable[[], str]
    recreate: Callable[[], None]
    stop: list[str]
    """The command that stops it the way its user would (`docker stop`, `docker compose stop`):
    SIGTERM, then a wait longer than the service's drain."""
    label: str


def check_service(d: Deployment, checks: Checks) -> None:
    http = httpx.Client(base_url=d.url, timeout=HTTP_TIMEOUT)

    def ready() -> bool:
        try:
            return http.get("/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    took = wait_for(f"{d.label}: /readyz through the published port", ready, READY_TIMEOUT)
    checks.ok(f"{d.label}: /readyz answers 200 through {d.url} ({took:.0f} s after start)")

    uid = d.engine("exec", d.container(), "id", "-u")
    expect(uid == "10001", f"runs as uid {uid}")
    checks.ok(f"{d.label}: the service runs as uid 10001")

    generated = http.post("/v1/generate", json={"prompt": "Say hello.", "max_tokens": 8, "seed": 1})
    expect(generated.status_code == 200, f"/v1/generate: {generated.status_code} {generated.text[:300]}")
    body = generated.json()
    expect(body["provider"] == "local" and body["usage"]["completion_tokens"] > 0, f"generate: {body}")
    checks.ok(f"{d.label}: /v1/generate answers with the embedded model")

    sdk = OpenAI(base_url=f"{d.url}/v1", api_key="unused", timeout=HTTP_TIMEOUT, max_retries=0)
    stream = sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    expect(text and finish and chunks[-1].usage is not None, f"streamed chat: {chunks[-3:]}")
    checks.ok(f"{d.label}: a streamed chat through the openai SDK ({len(chunks)} chunks, {finish[-1]})")

    conversation = http.post("/v1/conversations", json={"system": "You are terse."})
    expect(conversation.status_code == 200, f"new conversation: {conversation.text[:300]}")
    conversation_id = conversation.json()["id"]
    reply = http.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": "Hi!", "max_tokens": 8}
    )
    expect(reply.status_code == 200, f"conversation message: {reply.status_code} {reply.text[:300]}")
    history = http.get(f"/v1/conversations/{conversation_id}").json()
    expect([m["role"] for m in history["messages"]] == ["user", "assistant"], f"history: {history}")
    checks.ok(f"{d.label}: a conversation stores its turns")

    took = wait_for(f"{d.label}: HEALTHCHECK", lambda: d.engine.healthy(d.container()), 90, interval=2)
    checks.ok(f"{d.label}: the image's HEALTHCHECK reports healthy")

    d.recreate()
    wait_for(f"{d.label}: /readyz after recreating the container", ready, READY_TIMEOUT)
    again = http.get(f"/v1/conversations/{conversation_id}")
    expect(again.status_code == 200, f"after recreate: {again.status_code} {again.text[:300]}")
    expect(again.json()["messages"] == history["messages"], "the conversation changed on recreate")
    checks.ok(f"{d.label}: the conversation survives recreating the container (the /data volume)")

    check_drain(d, http, checks)
    http.close()


def check_drain(d: Deployment, http: httpx.Client, checks: Checks) -> None:
    """SIGTERM while a stream is being written: the stream still ends with [DONE], then the
    process exits 0."""
    container = d.container()
    request = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Count from one to one hundred in words."}],
        "max_tokens": 160,
        "temperature": 0,
        "stream": True,
    }
    before: list[str] = []
    after: list[str] = []
    with http.stream("POST", "/v1/chat/completions", json=request) as response:
        expect(response.status_code == 200, f"stream: {response.status_code}")
        lines = (line for line in response.iter_lines() if line.startswith("data: "))
        for line in lines:
            before.append(line)
            if '"content":"' in line and len(before) >= 2:
                break
        pipe = subprocess.PIPE
        stopping = subprocess.Popen(d.stop, env=d.engine.env, stdin=pipe, stdout=pipe, stderr=pipe)
        try:
            after.extend(lines)
            stopping.communicate(timeout=60)
        finally:
            if stopping.poll() is None:
                stopping.kill()
                stopping.communicate()
    content_after = [line for line in after if '"content":"' in line]
    expect(after and after[-1] == "data: [DONE]", f"the stream was cut after SIGTERM: {after[-3:]}")
    expect(content_after, "the stream had ended before SIGTERM: nothing was drained")
    checks.ok(
        f"{d.label}: SIGTERM mid-stream: {len(content_after)} more chunks, then data: [DONE] (graceful drain)"
    )

    def exited() -> bool:
        return d.engine("inspect", "--format", "{{.State.Running}}", container, check=False) == "false"

    wait_for(f"{d.label}: the container exits after SIGTERM", exited, 30)
    code = d.engine("inspect", "--format", "{{.State.ExitCode}}", container)
    expect(code == "0", f"exit code {code} after SIGTERM")
    checks.ok(f"{d.label}: the container exits 0 after draining")


# -- the scenarios --------------------------------------------------------------------------------


@dataclass
class Checks:
    passed: int = 0
    failed: list[str] = field(default_factory=list)

    def ok(self, message: str) -> None:
        self.passed += 1
        say(f"ok  {message}")

    def fail(self, message: str) -> None:
        """A failure that the checks after it do not depend on: reported, and the run goes on."""
        self.failed.append(message)
        say(f"FAIL {message}")


def build(engine: Engine, work: Path, checks: Checks) -> None:
    context = copy_of_the_clone(work / "build-context")
    log = work / "build.log"
    first = engine.build(context, TAG, log=log)
    ran = ran_steps(log.read_text())
    kind = "cold" if any("requirements-local" in step for step in ran) else "warm (dependencies cached)"
    say(f"build of {TAG}: {first:.0f} s, {kind}; {len(ran)} RUN steps ran")
    upstream_time = engine.build(context, TAG_UPSTREAM, "--target", "upstream", log=work / "upstream.log")
    say(f"build of {TAG_UPSTREAM} (--target upstream): {upstream_time:.0f} s")

    # A code-only change: the dependency layers must come from the cache.
    init = context / "app" / "__init__.py"
    init.write_text(init.read_text() + f"# image-test {RUN_ID}\n")
    rebuild = engine.build(context, TAG, log=log)
    ran = ran_steps(log.read_text())
    expect(
        not any("requirements" in step for step in ran),
        f"a code-only change re-ran dependency steps: {ran}",
    )
    checks.ok(f"a code-only change rebuilt in {rebuild:.0f} s, dependencies from the cache (ran: {ran})")

    base = engine.size(BASE_IMAGE)
    for tag, limit in SIZE_LIMIT.items():
        size = engine.size(tag)
        added = size - base
        report = f"{tag}: {size / MB:.0f} MB = base {base / MB:.0f} MB + {added / MB:.0f} MB of its own"
        if added <= limit:
            checks.ok(f"{report}, within its {limit / MB:.0f} MB")
        else:
            checks.fail(f"{report}, over its {limit / MB:.0f} MB")


def with_copied_env_example(directory: Path) -> Path:
    shutil.copy(ROOT / ".env.example", directory / ".env")
    return directory / ".env"


def run_image(engine: Engine, started: Started, work: Path, checks: Checks) -> None:
    """`docker run` with a copied .env.example, the way the README shows it."""
    env_file = with_copied_env_example(work)
    port = free_port()
    name = f"genserve-it-{RUN_ID}"
    volume = f"genserve-it-{RUN_ID}"
    started.containers.append(name)
    started.volumes.append(volume)

    def start() -> None:
        engine(
            "run", "--detach", "--name", name, "--env-file", str(env_file),
            "--env", "GENSERVE_ALLOW_OPEN_ACCESS=true", "--publish", f"127.0.0.1:{port}:8000",
            "--volume", f"{volume}:/data", TAG,
        )  # fmt: skip

    def recreate() -> None:
        engine("stop", "--time", "40", name, timeout=60)
        engine("rm", name)
        start()

    start()
    stop = [engine.cli, "stop", "--time", "40", name]
    deployment = Deployment(engine, f"http://127.0.0.1:{port}", lambda: name, recreate, stop, "run")
    try:
        check_service(deployment, checks)
    except (CheckFailed, httpx.HTTPError, KeyError) as exc:
        say(f"logs of {name}:\n{engine('logs', '--tail', '40', name, check=False)}")
        raise CheckFailed(str(exc)) from exc
    engine("rm", "--force", "--volumes", name)


def with_keys_on(env_file: Path) -> str:
    """The README's step before publishing beyond loopback: keys on, a random admin token."""
    token = secrets.token_urlsafe(32)
    text = env_file.read_text()
    text = re.sub(r"^GENSERVE_AUTH_MODE=.*$", "GENSERVE_AUTH_MODE=keys", text, flags=re.M)
    text = re.sub(r"^GENSERVE_ADMIN_TOKEN=.*$", f"GENSERVE_ADMIN_TOKEN={token}", text, flags=re.M)
    env_file.write_text(text)
    return token


def run_upstream_image(engine: Engine, started: Started, work: Path, checks: Checks) -> None:
    """The upstream-only image, with client keys on as the README says to do before publishing
    beyond loopback: no GENSERVE_ALLOW_OPEN_ACCESS needed, and /v1 needs a key."""
    env_file = with_copied_env_example(work)
    token = with_keys_on(env_file)
    port = free_port()
    name = f"genserve-it-upstream-{RUN_ID}"
    started.containers.append(name)
    engine(
        "run", "--detach", "--name", name, "--env-file", str(env_file),
        "--env", "OPENAI_API_KEY=sk-image-test", "--publish", f"127.0.0.1:{port}:8000", TAG_UPSTREAM,
    )  # fmt: skip
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HTTP_TIMEOUT)

    def ready() -> bool:
        try:
            return http.get("/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for("upstream image: /readyz", ready, READY_TIMEOUT)
        refused = http.get("/v1/models")
        expect(refused.status_code == 401, f"/v1/models without a key: {refused.status_code}")
        created = http.post(
            "/admin/keys", json={"name": "image-test"}, headers={"authorization": f"Bearer {token}"}
        )
        expect(created.status_code in (200, 201), f"/admin/keys: {created.status_code} {created.text[:300]}")
        key = created.json()["key"]
        listed = http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
        models = [m["id"] for m in listed.json()["data"]]
        expect("gpt-4o-mini" in models, f"upstream models: {models}")
        wait_for("upstream image: HEALTHCHECK", lambda: engine.healthy(name), 90, interval=2)
    except (CheckFailed, httpx.HTTPError, KeyError) as exc:
        say(f"logs of {name}:\n{engine('logs', '--tail', '40', name, check=False)}")
        raise CheckFailed(str(exc)) from exc
    finally:
        http.close()
    checks.ok(
        f"{TAG_UPSTREAM}: with keys on (the README's recipe), /v1 refuses without a key (401) and"
        f" lists the upstream's models with one; healthy"
    )
    engine("rm", "--force", "--volumes", name)


def run_compose(engine: Engine, started: Started, work: Path, checks: Checks) -> None:
    """From a fresh copy of the clone: `cp .env.example .env && compose up -d genserve`."""
    clone = copy_of_the_clone(work / "clone")
    with_copied_env_example(clone)
    project = f"genserve-it-{RUN_ID}"
    port = free_port()
    engine.env["GENSERVE_PUBLISHED_PORT"] = str(port)
    started.projects.append((clone, project))
    start = time.monotonic()
    compose(engine, clone, project, "build", "genserve", timeout=BUILD_TIMEOUT)
    say(f"compose build genserve: {time.monotonic() - start:.0f} s")
    compose(engine, clone, project, "up", "-d", "genserve")

    def container() -> str:
        names = engine(
            "ps", "--all", "--format", "{{.Names}}",
            "--filter", f"label=com.docker.compose.project={project}",
            "--filter", "label=com.docker.compose.service=genserve",
        ).split()  # fmt: skip
        expect(len(names) == 1, f"compose containers: {names}")
        return names[0]

    def recreate() -> None:
        compose(engine, clone, project, "down")  # keeps the named volume
        compose(engine, clone, project, "up", "-d", "genserve")

    assert engine.compose is not None
    stop = [
        *engine.compose, "--file", str(clone / "docker-compose.yml"), "--project-name", project,
        "stop", "--timeout", "40", "genserve",
    ]  # fmt: skip
    deployment = Deployment(engine, f"http://127.0.0.1:{port}", container, recreate, stop, "compose")
    try:
        check_service(deployment, checks)
    except (CheckFailed, httpx.HTTPError, KeyError) as exc:
        with suppress(CheckFailed):
            say(f"logs:\n{engine('logs', '--tail', '40', container(), check=False)}")
        raise CheckFailed(str(exc)) from exc


@contextmanager
def terminated_cleanly() -> Iterator[None]:
    """SIGTERM and SIGHUP (CI's timeout, a closed terminal) unwind like Ctrl-C: the clean-up runs."""

    def interrupt(signum: int, frame: FrameType | None) -> Any:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main() -> int:
    if os.environ.get("IMAGE_TEST_SKIP") == "1":
        say("skipped (IMAGE_TEST_SKIP=1): the image was neither built nor run")
        return 0
    engine = find_engine()
    if engine is None:
        say(
            "FAILED: no container engine. Neither does `docker info` answer, nor is there "
            f"{ROOT.parent}/shared/container/build.sh (or $GENSERVE_CONTAINER_TOOLS/build.sh). "
            "Start Docker, or set IMAGE_TEST_SKIP=1 to skip on purpose."
        )
        return 1
    checks = Checks()
    started = Started(engine)
    start = time.monotonic()
    failed: str | None = None
    with tempfile.TemporaryDirectory(prefix="genserve-image-test-") as tmp, terminated_cleanly():
        work = Path(tmp)
        try:
            build(engine, work, checks)
            run_image(engine, started, work, checks)
            run_upstream_image(engine, started, work, checks)
            if engine.compose is not None:
                run_compose(engine, started, work, checks)
            else:
                say("no compose tool: the compose checks were not run")
        except (CheckFailed, httpx.HTTPError, KeyError, json.JSONDecodeError) as exc:
            failed = f"{type(exc).__name__}: {exc}"
        except KeyboardInterrupt as exc:
            failed = f"interrupted ({exc or 'SIGINT'})"
        finally:
            started.clean_up()
    say(f"took {time.monotonic() - start:.0f} s")
    if failed is not None:
        checks.fail(failed)
    for failure in checks.failed:
        say(f"FAILED: {failure}")
    print(f"image-test: {checks.passed} passed, {len(checks.failed)} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
