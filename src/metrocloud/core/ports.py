"""Free TCP ports on loopback for the processes metrocloud starts (services, NATS nodes)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["EPHEMERAL_PORTS", "LOWEST_PORT", "free_port"]

EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(p) for p in EPHEMERAL_PORTS.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's
    ephemeral range: a port from that range may be handed to an outgoing connection (to
    the broker, say) between this check and the service binding it."""
    low, _ = _ephemeral_range()
    candidates = list(range(LOWEST_PORT, low)) if low > LOWEST_PORT + 1000 else []
    for port in random.sample(candidates, min(len(candidates), 200)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:  # no room below the range: let the kernel choose
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
