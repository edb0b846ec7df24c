"""Helpers shared by the bus tests: role connections that are closed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from nats.aio.client import Client
from nats.aio.msg import Msg

from metrocloud.bus.connect import BusErrors, connect
from metrocloud.bus.server import Credentials, EmbeddedNatsServer
from metrocloud.bus.streams import ensure_streams


class Bus:
    """Connections to one test server; every role's errors are kept for assertions.

    ``credentials`` gives each role's credentials: the server's passwords by default, TLS
    client certificates for a server in TLS mode.
    """

    def __init__(
        self,
        server: EmbeddedNatsServer,
        credentials: Callable[[str], Credentials] | None = None,
    ) -> None:
        self.server = server
        self.credentials = credentials or server.credentials
        self.clients: list[Client] = []
        self.errors: dict[str, BusErrors] = {}

    async def connect(self, role: str) -> Client:
        errors = self.errors.setdefault(role, BusErrors())
        nc = await connect(
            self.server.url,
            self.credentials(role),
            name=f"test-{role}",
            role=role,
            errors=errors,
            first_connect_timeout_s=10.0,
        )
        self.clients.append(nc)
        return nc

    def violations(self) -> dict[str, list[str]]:
        return {role: e.violations for role, e in self.errors.items() if e.violations}

    async def close(self) -> None:
        for nc in self.clients:
            if not nc.is_closed:
                await nc.close()


@asynccontextmanager
async def open_bus(
    server: EmbeddedNatsServer,
    *,
    streams: bool = True,
    credentials: Callable[[str], Credentials] | None = None,
) -> AsyncIterator[Bus]:
    """Connections to ``server``; with ``streams`` the admin first creates streams/consumers."""
    bus = Bus(server, credentials)
    try:
        if streams:
            admin = await bus.connect("admin")
            await ensure_streams(admin.jetstream())
        yield bus
    finally:
        await bus.close()


async def collect(nc: Client, subject: str) -> list[Msg]:
    """Subscribe ``nc`` to ``subject`` and return the (live) list of received messages."""
    got: list[Msg] = []

    async def _on(msg: Msg) -> None:
        got.append(msg)

    await nc.subscribe(subject, cb=_on)
    await nc.flush()
    return got


async def arrived(got: list[Msg], count: int, timeout_s: float = 10.0) -> list[Msg]:
    """Wait until ``got`` (from :func:`collect`) holds ``count`` messages, or the timeout;
    for deliveries that must come (a loaded machine may take longer than :func:`settle`)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return got


async def settle(*clients: Client, delay_s: float = 0.2) -> None:
    """Flush every client (round trip to the server), then leave time for deliveries."""
    for nc in clients:
        await nc.flush()
    await asyncio.sleep(delay_s)
