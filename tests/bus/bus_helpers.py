"""Helpers shared by the bus tests: role connections that are closed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from metrocloud.bus.connect import BusErrors, connect
from metrocloud.bus.server import Credentials
from metrocloud.bus.streams import ensure_streams, fetch


class BusServer(Protocol):
    """What the tests connect to: an embedded server, or a cluster (all its URLs)."""

    @property
    def url(self) -> str: ...

    def credentials(self, role: str) -> Credentials: ...


class Bus:
    """Connections to one test server; every role's errors are kept for assertions.

    ``credentials`` gives each role's credentials: the server's passwords by default, TLS
    client certificates for a server in TLS mode. ``urls`` maps a role to the URL(s) it
    connects to (the server's by default): on a cluster, roles on different nodes.
    """

    def __init__(
        self,
        server: BusServer,
        credentials: Callable[[str], Credentials] | None = None,
        urls: Callable[[str], str] | None = None,
    ) -> None:
        self.server = server
        self.credentials = credentials or server.credentials
        self.urls = urls or (lambda _role: server.url)
        self.clients: list[Client] = []
        self.errors: dict[str, BusErrors] = {}

    async def connect(self, role: str) -> Client:
        errors = self.errors.setdefault(role, BusErrors())
        nc = await connect(
            self.urls(role),
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
    server: BusServer,
    *,
    streams: bool = True,
    credentials: Callable[[str], Credentials] | None = None,
    urls: Callable[[str], str] | None = None,
    replicas: int = 1,
) -> AsyncIterator[Bus]:
    """Connections to ``server``; with ``streams`` the admin first creates streams/consumers
    (with ``replicas`` copies each)."""
    bus = Bus(server, credentials, urls)
    try:
        if streams:
            admin = await bus.connect("admin")
            await ensure_streams(admin.jetstream(), replicas=replicas)
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


PullSubscription = JetStreamContext.PullSubscription


async def fetch_count(sub: PullSubscription, count: int, timeout_s: float = 10.0) -> list[Msg]:
    """Pull until ``count`` messages came, or the timeout: one fetch may return what is
    there so far (on a cluster a message that was just published may reach the consumer's
    leader a moment after the one before it)."""
    got: list[Msg] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < count:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            break
        got += await fetch(sub, batch=count - len(got), timeout_s=min(2.0, left))
    return got


async def settle(*clients: Client, delay_s: float = 0.2) -> None:
    """Flush every client (round trip to the server), then leave time for deliveries."""
    for nc in clients:
        await nc.flush()
    await asyncio.sleep(delay_s)


@dataclass(frozen=True)
class BusTarget:
    """Where a test's connections go: a server or a cluster, each role to its URL(s).

    ``urls`` (role -> URL) puts roles on different nodes of a cluster; ``replicas`` is
    what the admin's :func:`ensure_streams` asks for. ``interest`` waits until a new
    subscription is known to every node (a cluster tells its nodes of a subscription
    asynchronously: a message published on another node a moment after the subscriber's
    flush may find no interest there yet).
    """

    server: BusServer
    urls: Callable[[str], str] | None = None
    credentials: Callable[[str], Credentials] | None = None
    replicas: int = 1
    interest: Callable[[str], Awaitable[None]] | None = None

    async def await_interest(self, subscription: str) -> None:
        """After subscribing to ``subscription`` (and flushing): wait until all nodes know."""
        if self.interest is not None:
            await self.interest(subscription)

    def open(self, *, streams: bool = True) -> AbstractAsyncContextManager[Bus]:
        return open_bus(
            self.server,
            streams=streams,
            credentials=self.credentials,
            urls=self.urls,
            replicas=self.replicas,
        )
