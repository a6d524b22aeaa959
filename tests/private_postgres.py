"""A private PostgreSQL for tests that stop, kill or reconfigure one: its own data directory,
port and PID (the machine's shared server is never touched). `make chaos` and the degradation
tests use it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.processes import free_port


def _bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin)"
    return found[-1].parent


class PrivatePostgres:
    """initdb into `root`, then start/stop at will on a free loopback port."""

    def __init__(self, root: Path, *, max_connections: int = 100) -> None:
        self.bin = _bin()
        self.max_connections = max_connections
        self.data = root / "pgdata"
        self.sockets = root / "pgsock"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # PostgreSQL refuses to run as root: the data directory belongs to the postgres user then.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.sockets.mkdir()
        if self.user:
            shutil.chown(root, self.user)
            shutil.chown(self.sockets, self.user)
        subprocess.run(
            [self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            user=self.user,
            timeout=120,
        )

    @property
    def url(self) -> str:
        """For asyncpg."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.bin / "postgres",
                "-D", self.data,
                "-p", str(self.port),
                "-k", self.sockets,
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"max_connections={self.max_connections}",
                "-c", "fsync=off",  # durability across a process restart needs no fsync
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._ready():
            assert time.monotonic() < deadline, "PostgreSQL did not start within 30 s"
            time.sleep(0.1)

    def _ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, "PostgreSQL exited while starting"
        probe = [self.bin / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, check=False).returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are cut, as in a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
