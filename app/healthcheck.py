"""`python -m app.healthcheck`: the container's HEALTHCHECK, asked where a published port arrives.

A published port forwards to the container's own address on its network, never to its loopback.
Asking 127.0.0.1 would call a service healthy that only listens there and that nobody outside can
reach; this check asks the container's non-loopback address instead. Exit status 0 is healthy.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

# TEST-NET-2 (RFC 5737): connecting a UDP socket sends nothing, it only picks the route's source address.
_UNROUTED = ("198.51.100.1", 9)


def _routable(address: str) -> bool:
    return not ipaddress.ip_address(address).is_loopback


def container_address() -> str:
    """This host's first non-loopback IPv4 address: its name's, else the default route's."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        infos = []
    for *_, sockaddr in infos:
        if _routable(str(sockaddr[0])):
            return str(sockaddr[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_UNROUTED)
            address = str(probe.getsockname()[0])
    except OSError as exc:
        raise LookupError("this container has no network address besides loopback") from exc
    if not _routable(address):
        raise LookupError("this container has no network address besides loopback")
    return address


def check(port: int, path: str, timeout: float) -> str | None:
    """None when `path` answers 200 on the container's address, else what went wrong."""
    try:
        url = f"http://{container_address()}:{port}{path}"
    except LookupError as exc:
        return str(exc)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        return f"{url}: {exc} (is the service listening on 0.0.0.0?)"
    return None if status == 200 else f"{url}: HTTP {status}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.healthcheck", description=__doc__)
    parser.add_argument("path", nargs="?", default="/healthz", help="what to ask (default /healthz)")
    parser.add_argument("--port", type=int, default=8000, help="the port the service listens on")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    problem = check(args.port, args.path, args.timeout)
    if problem is not None:
        sys.exit(f"unhealthy: {problem}")


if __name__ == "__main__":
    main()
