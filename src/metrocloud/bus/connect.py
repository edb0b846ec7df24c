"""Connecting to the bus as one role, with that role's private reply inbox.

A role proves who it is with a TLS client certificate (the cloud: mutual TLS, see
:func:`tls_credentials`) or, against a password-mode test server, a password.

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
import ssl
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client

from metrocloud.bus.server import Credentials
from metrocloud.bus.subjects import ROLES, inbox_prefix
from metrocloud.core.errors import ConfigurationError, MetrocloudError

__all__ = [
    "BusConnectError",
    "BusErrors",
    "client_tls_context",
    "connect",
    "server_urls",
    "tls_credentials",
]

_log = logging.getLogger(__name__)

_PERMISSIONS = "permissions violation"
_AUTHORIZATION = "authorization violation"


class BusConnectError(MetrocloudError):
    """The first connection to the bus could not be made in time, or was refused."""


def client_tls_context(
    ca_file: Path, cert_file: Path, key_file: Path, password: bytes | None = None
) -> ssl.SSLContext:
    """A TLS client context for the bus: trusts ``ca_file``, presents a client certificate.

    ``cert_file`` holds the client certificate followed by its sub-CA (all of it is sent);
    ``key_file`` its private key, PKCS#8 PEM, encrypted with ``password`` or in clear when
    ``password`` is None. The server's certificate must chain to ``ca_file`` and name the
    host connected to; TLS 1.2 at least. ``ConfigurationError`` when a file is missing or
    unusable (a wrong password, say).
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(cert_file), str(key_file), password=password)
    except (OSError, ssl.SSLError) as exc:  # FileNotFoundError, bad password, bad PEM...
        raise ConfigurationError(
            f"cannot make the bus TLS context from {cert_file}, {key_file} and {ca_file}: {exc}"
        ) from exc
    return context


def tls_credentials(
    role: str, ca_file: Path, cert_file: Path, key_file: Path, password: bytes | None = None
) -> Credentials:
    """Credentials of ``role`` with a client certificate (see :func:`client_tls_context`)."""
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    return Credentials(user=role, tls=client_tls_context(ca_file, cert_file, key_file, password))


_TLS_REFUSALS = ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED", "HANDSHAKE_FAILURE")


def _refused(exc: Exception) -> bool:
    """Whether a failed first connection would fail the same way on every retry.

    A wrong password (authorization violation), a server certificate this client does not
    trust, or a TLS alert by which the server refuses the client's certificate.
    """
    if _AUTHORIZATION in str(exc).lower() or isinstance(exc, ssl.SSLCertVerificationError):
        return True
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    return isinstance(reason, str) and any(r in reason for r in _TLS_REFUSALS)


def server_urls(url: str | Sequence[str]) -> list[str]:
    """The server URLs of ``url``: one URL, several separated by commas, or a list of them
    (the nodes of a cluster). ``ConfigurationError`` when none is given."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = [u.strip() for u in parts if u.strip()]
    if not urls:
        raise ConfigurationError(f"no bus server URL in {url!r}")
    return urls


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
    url: str | Sequence[str],
    credentials: Credentials,
    *,
    name: str,
    role: str,
    errors: BusErrors | None = None,
    first_connect_timeout_s: float | None = 30.0,
    **kwargs: Any,
) -> Client:
    """Connect to the bus as ``role`` and return the nats-py client.

    ``url`` is one server (``tls://127.0.0.1:PORT``) or several: the nodes of a cluster, as
    a list or one comma-separated string. The client connects to one of them and, when
    that one goes away, reconnects to another (and to the nodes the cluster tells it of).
    With TLS credentials the client presents their certificate and checks the server's
    against the host of the URL it connects to (``127.0.0.1``, ``10.0.0.2``), and sends
    no user or password.
    The client uses the role's inbox prefix, reconnects forever with short waits, and logs
    every asynchronous error (recording it in ``errors`` when given). ``kwargs`` go to
    :meth:`nats.aio.client.Client.connect` and override the defaults set here (not
    ``error_cb``, ``inbox_prefix``, ``user``, ``password`` or ``tls``). The first
    connection is retried until ``first_connect_timeout_s`` (None: forever), then
    :class:`BusConnectError` is raised; at once when the server refuses the credentials
    (or the client the server's certificate), since retrying would not help.
    """
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    if credentials.user != role:
        raise ConfigurationError(
            f"credentials are for user {credentials.user!r}, not for role {role!r}"
        )
    reserved = {"error_cb", "inbox_prefix", "user", "password", "servers", "tls"} & kwargs.keys()
    if reserved:
        raise TypeError(f"connect() sets {', '.join(sorted(reserved))} itself")
    servers = server_urls(url)
    shown = ", ".join(servers)
    login: dict[str, Any]
    if credentials.tls is not None:
        login = {"tls": credentials.tls}
        hosts = {urlsplit(u).hostname for u in servers}
        if len(hosts) == 1:  # else nats-py checks each server against its own host
            login["tls_hostname"] = hosts.pop()
    elif credentials.password is not None:
        login = {"user": credentials.user, "password": credentials.password}
    else:
        raise ConfigurationError(f"the credentials of {role!r} carry neither TLS nor a password")

    connected = False
    loop = asyncio.get_running_loop()
    refused: asyncio.Future[Exception] = loop.create_future()

    async def _error_cb(exc: Exception) -> None:
        text = str(exc).lower()
        if _PERMISSIONS in text:
            _log.warning("bus %s (role %s): %s", name, role, exc)
        else:
            _log.info("bus %s (role %s): %r", name, role, exc)
        if not connected and _refused(exc) and not refused.done():
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
    options.update(login)
    options.update(kwargs)

    nc = Client()
    attempt = asyncio.ensure_future(
        nc.connect(
            servers=servers,
            name=name,
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
        reason = refused.result()
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise BusConnectError(
                f"the bus at {shown} is not trusted by the client of {role!r}: {reason}"
            )
        raise BusConnectError(f"the bus at {shown} refused the credentials of {role!r}: {reason}")
    failure: BaseException | None = None
    if attempt.done() and not attempt.cancelled():
        failure = attempt.exception()
    last = failure or nc.last_error
    raise BusConnectError(
        f"could not connect to {shown} as {role!r} within {first_connect_timeout_s} s "
        f"(last error: {last!r})"
    )
