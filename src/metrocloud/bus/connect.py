"""Connecting to the bus as one role, with that role's private reply inbox.

Every role may subscribe only to its own ``_INBOX_<role>.>`` for replies (JetStream
publish acknowledgements, fetched messages, request/reply), so the client must use that
inbox prefix; :func:`connect` sets it. Permission violations are not fatal in NATS: the
server answers ``-ERR 'Permissions Violation ...'`` and drops the message or subscription.
They are reported to the error callback; pass a :class:`BusErrors` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from asyncio import FIRST_COMPLETED
from typing import Any

from nats.aio.client import Client

from metrocloud.bus.server import Credentials
from metrocloud.bus.subjects import ROLES, inbox_prefix
from metrocloud.core.errors import ConfigurationError, MetrocloudError

__all__ = ["BusConnectError", "BusErrors", "connect"]

_log = logging.getLogger(__name__)

_PERMISSIONS = "permissions violation"
_AUTHORIZATION = "authorization violation"


class BusConnectError(MetrocloudError):
    """The first connection to the bus could not be made in time."""


class BusErrors:
    """Collects the asynchronous errors of one connection (use as ``errors=`` of connect).

    ``violations`` holds the server's permission-violation messages (lower-cased by nats-py,
    e.g. ``nats: permissions violation for publish to "legal.in.reading.x"``); ``errors``
    holds every error reported, violations included.
    """

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.violations: list[str] = []
        self._changed = asyncio.Event()

    async def __call__(self, exc: Exception) -> None:
        self.errors.append(exc)
        if _PERMISSIONS in str(exc).lower():
            self.violations.append(str(exc))
        self._changed.set()

    async def wait_for_violation(self, contains: str = "", timeout_s: float = 2.0) -> str:
        """Wait until a violation whose message contains ``contains`` has been reported."""

        async def _wait() -> str:
            while True:
                for v in self.violations:
                    if contains.lower() in v.lower():
                        return v
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(_wait(), timeout_s)


async def connect(
    url: str,
    credentials: Credentials,
    *,
    name: str,
    role: str,
    errors: BusErrors | None = None,
    first_connect_timeout_s: float | None = 30.0,
    **kwargs: Any,
) -> Client:
    """Connect to the bus as ``role`` and return the nats-py client.

    The client uses the role's inbox prefix, reconnects forever with short waits, and logs
    every asynchronous error (recording it in ``errors`` when given). ``kwargs`` go to
    :meth:`nats.aio.client.Client.connect` and override the defaults set here (not
    ``error_cb``, ``inbox_prefix``, ``user`` or ``password``). The first connection is
    retried until ``first_connect_timeout_s`` (None: forever), then
    :class:`BusConnectError` is raised.
    """
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    if credentials.user != role:
        raise ConfigurationError(
            f"credentials are for user {credentials.user!r}, not for role {role!r}"
        )
    reserved = {"error_cb", "inbox_prefix", "user", "password", "servers"} & kwargs.keys()
    if reserved:
        raise TypeError(f"connect() sets {', '.join(sorted(reserved))} itself")

    connected = False
    loop = asyncio.get_running_loop()
    refused: asyncio.Future[Exception] = loop.create_future()

    async def _error_cb(exc: Exception) -> None:
        text = str(exc).lower()
        if _PERMISSIONS in text:
            _log.warning("bus %s (role %s): %s", name, role, exc)
        else:
            _log.info("bus %s (role %s): %r", name, role, exc)
        if not connected and _AUTHORIZATION in text and not refused.done():
            refused.set_result(exc)  # wrong credentials: retrying will not help
        if errors is not None:
            await errors(exc)

    options: dict[str, Any] = {
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "connect_timeout": 2,
        "ping_interval": 20,
        # Room for one maximal message in the client's outgoing buffer.
        "pending_size": 16 * 1024 * 1024,
    }
    options.update(kwargs)

    nc = Client()
    attempt = asyncio.ensure_future(
        nc.connect(
            servers=[url],
            name=name,
            user=credentials.user,
            password=credentials.password,
            inbox_prefix=inbox_prefix(role),
            error_cb=_error_cb,
            **options,
        )
    )
    try:
        waiters: set[asyncio.Future[Any]] = {attempt, refused}
        await asyncio.wait(waiters, timeout=first_connect_timeout_s, return_when=FIRST_COMPLETED)
    except BaseException:
        attempt.cancel()
        await nc.close()
        raise
    if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
        connected = True
        refused.cancel()
        return nc
    attempt.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await attempt
    await nc.close()
    if refused.done() and not refused.cancelled():
        raise BusConnectError(
            f"the bus at {url} refused the credentials of {role!r}: {refused.result()}"
        )
    failure: BaseException | None = None
    if attempt.done() and not attempt.cancelled():
        failure = attempt.exception()
    last = failure or nc.last_error
    raise BusConnectError(
        f"could not connect to {url} as {role!r} within {first_connect_timeout_s} s "
        f"(last error: {last!r})"
    )
