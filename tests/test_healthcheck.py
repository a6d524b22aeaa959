"""The image's HEALTHCHECK: healthy only when the service answers where a published port arrives."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import healthcheck


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def listening_on(host: str) -> Iterator[int]:
    """A /healthz server bound to `host` on a free port; yields the port."""
    server = ThreadingHTTPServer((host, 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_checked_address_is_not_loopback() -> None:
    address = healthcheck.container_address()
    assert not ipaddress.ip_address(address).is_loopback
    # and it is this machine's own: a socket can be bound to it
    with socket.socket() as probe:
        probe.bind((address, 0))


def test_a_service_on_every_interface_is_healthy() -> None:
    with listening_on("0.0.0.0") as port:
        assert healthcheck.check(port, "/healthz", timeout=5) is None


def test_a_service_on_loopback_only_is_unhealthy() -> None:
    """What a copied .env's GENSERVE_HOST=127.0.0.1 did to the container: the published port was
    dead, and a check of 127.0.0.1 called it healthy."""
    with listening_on("127.0.0.1") as port:
        problem = healthcheck.check(port, "/healthz", timeout=5)
    assert problem is not None
    assert "0.0.0.0" in problem


def test_a_failing_answer_is_unhealthy() -> None:
    with listening_on("0.0.0.0") as port:
        assert healthcheck.check(port, "/nowhere", timeout=5) == (
            f"http://{healthcheck.container_address()}:{port}/nowhere: HTTP 404"
        )


def test_the_command_exits_non_zero_when_unhealthy() -> None:
    with listening_on("127.0.0.1") as port, pytest.raises(SystemExit, match="unhealthy"):
        healthcheck.main(["/healthz", "--port", str(port), "--timeout", "5"])
    with listening_on("0.0.0.0") as port:
        healthcheck.main(["/healthz", "--port", str(port)])
