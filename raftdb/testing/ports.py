"""Free TCP ports on 127.0.0.1 for test and benchmark servers."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_ports"]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1.

    Picked at random below the kernel's ephemeral range and checked by binding,
    so that no outgoing connection (which takes an ephemeral port) can grab one
    between now and the server's bind; bound to port 0 if that range is full.
    """
    low, _ = _ephemeral_range()
    rng = random.Random()
    ports: list[int] = []
    socks: list[socket.socket] = []
    try:
        for _ in range(200 * count):
            if len(ports) == count or low <= 10_000:
                break
            port = rng.randrange(10_000, low)
            if port in ports:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in socks:
            s.close()
