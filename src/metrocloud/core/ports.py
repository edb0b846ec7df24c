"""Free TCP ports on loopback for the processes metrocloud starts (services, NATS nodes).

A port is chosen here, then bound seconds later by the process it is given to. Two things
could take it in between, and both are kept out:

- **this process choosing it again** for another service: a port handed out once is not
  handed out again by this process;
- **another supervisor on the same machine** choosing it too (two test workers, each
  starting clouds): ``$METROCLOUD_PORT_RANGE`` (``LOW-HIGH``) gives each its own range.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

from metrocloud.core.errors import ConfigurationError

__all__ = ["EPHEMERAL_PORTS", "LOWEST_PORT", "PORT_RANGE_ENV", "free_port", "port_range"]

EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000
PORT_RANGE_ENV = "METROCLOUD_PORT_RANGE"

_handed_out: set[int] = set()
_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(p) for p in EPHEMERAL_PORTS.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def port_range() -> range:
    """Where :func:`free_port` looks: ``$METROCLOUD_PORT_RANGE`` (``LOW-HIGH``, both
    included), else from 10,000 up to the kernel's ephemeral range (a port from that range
    may be handed to an outgoing connection, to the broker say, between the choice and the
    bind)."""
    given = os.environ.get(PORT_RANGE_ENV)
    if given:
        try:
            low, high = (int(p) for p in given.split("-"))
        except ValueError:
            raise ConfigurationError(f"{PORT_RANGE_ENV}={given!r} is not LOW-HIGH") from None
        if not 1024 <= low <= high <= 65535:
            raise ConfigurationError(f"{PORT_RANGE_ENV}={given!r} is not within 1024-65535")
        return range(low, high + 1)
    low, _ = _ephemeral_range()
    return range(LOWEST_PORT, low) if low > LOWEST_PORT + 1000 else range(0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now and that this process has
    not handed out before (see the module docstring)."""
    with _lock:
        candidates = port_range()
        for port in random.sample(candidates, min(len(candidates), 400)):
            if port in _handed_out:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
        with socket.socket() as probe:  # no room in the range: let the kernel choose
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        _handed_out.add(port)
        return port
