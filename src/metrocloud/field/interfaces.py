"""Serving a gateway's HAN and WAN sides on 127.0.0.1, each under uvicorn in a thread.

:func:`serve_gateway` starts both for a :class:`~metrocloud.field.smgw.SmartMeterGateway`:
the consumer's page over plain HTTP (:mod:`metrocloud.field.han`) and the administrator's
API over mutual TLS (:mod:`metrocloud.field.wan`)::

    ids = data.identities_store(pki)                      # a DataDir's identities
    wan_server_identity(ids, "gw-1")                      # issues gw-1-wan if missing
    with serve_gateway(
        smgw,
        trust=data.trust_store,                           # or a TrustStore
        wan_tls=TlsFiles.in_folder(data.identities, "gw-1-wan", data.passphrase()),
    ) as served:
        print(served.han_url, served.wan_url)

The servers run until :meth:`GatewayInterfaces.close` (or the end of the ``with``); they
live in daemon threads, so they never keep a process alive.

The cloud's :class:`metrocloud.cloud.https.HttpsServer` serves inside a service's event
loop and checks no client certificates; here the caller is the synchronous testbed, and the
WAN side needs the client's certificate in the ASGI scope. uvicorn does not fill the ASGI
``tls`` extension, so :class:`TlsScopeProtocol` (uvicorn's h11 protocol) adds it per
connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from metrocloud.core.errors import ConfigurationError
from metrocloud.field.han import ConsumerAccounts, create_han_app
from metrocloud.field.smgw import SmartMeterGateway
from metrocloud.field.wan import Trust, create_wan_app
from metrocloud.pki import TrustStore

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TlsFiles:
    """A TLS server's certificate chain (PEM: certificate, then its sub-CA) and key file
    (PKCS#8 PEM, encrypted with ``password`` or in clear)."""

    certificate: Path
    key: Path
    password: bytes | None = None

    @classmethod
    def in_folder(cls, folder: Path, name: str, password: bytes | None = None) -> TlsFiles:
        """Identity ``name`` as an :class:`~metrocloud.pki.IdentityStore` with a
        :class:`~metrocloud.pki.FileKeyStore` keeps it: ``<folder>/<name>.pem`` and ``.key``."""
        return cls(folder / f"{name}.pem", folder / f"{name}.key", password)


class TlsScopeProtocol(H11Protocol):
    """uvicorn's h11 protocol that puts the TLS peer's certificate into the ASGI scope
    (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM, as the ASGI TLS extension
    says; only the peer's own certificate, which is all Python's ``ssl`` hands out)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        tls = {
            "server_cert": None,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": None,
            "cipher_suite": None,
        }
        inner = self.app

        async def with_tls(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                extensions = dict(scope.get("extensions") or {})
                extensions["tls"] = tls
                scope = {**scope, "extensions": extensions}
            await inner(scope, receive, send)

        self.app = with_tls


class BackgroundServer:
    """``app`` under uvicorn on ``127.0.0.1:port`` (0: a free port) in a daemon thread;
    with ``tls`` over HTTPS, with ``client_ca`` (PEM) also requiring a client certificate
    that chains to it."""

    def __init__(
        self,
        app: FastAPI,
        *,
        port: int = 0,
        tls: TlsFiles | None = None,
        client_ca: bytes | None = None,
    ) -> None:
        if client_ca is not None and tls is None:
            raise ConfigurationError("client certificates need a TLS server")
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((HOST, port))
        except OSError as exc:
            self._socket.close()
            raise ConfigurationError(f"cannot listen on {HOST}:{port}: {exc}") from exc
        self.port = int(self._socket.getsockname()[1])
        self.scheme = "http" if tls is None else "https"
        options: dict[str, Any] = {}
        if tls is not None:
            options.update(
                ssl_certfile=str(tls.certificate),
                ssl_keyfile=str(tls.key),
                ssl_keyfile_password=None if tls.password is None else tls.password.decode(),
            )
        config = uvicorn.Config(
            app,
            host=HOST,
            port=self.port,
            log_level="warning",
            lifespan="off",
            http=TlsScopeProtocol if tls is not None else "h11",
            **options,
        )
        try:
            if client_ca is None:
                config.load()
            else:
                # uvicorn reads the CA from a file, once, when it loads its configuration.
                with tempfile.TemporaryDirectory() as folder:
                    ca_file = Path(folder) / "client-ca.pem"
                    ca_file.write_bytes(client_ca)
                    config.ssl_cert_reqs = ssl.CERT_REQUIRED
                    config.ssl_ca_certs = str(ca_file)
                    config.load()
        except (OSError, ssl.SSLError) as exc:
            self._socket.close()
            raise ConfigurationError(f"cannot set up TLS for {HOST}:{self.port}: {exc}") from exc
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Serve in a thread; return once the server accepts connections."""
        thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise ConfigurationError(f"the server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask the server to finish (:meth:`close` waits for it)."""
        self._server.should_exit = True

    def close(self, timeout_s: float = 10.0) -> None:
        self.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._socket.close()


@dataclass
class GatewayInterfaces:
    """A gateway's HAN and WAN sides as served by :func:`serve_gateway`."""

    gateway: SmartMeterGateway
    accounts: ConsumerAccounts
    han: BackgroundServer
    wan: BackgroundServer

    @property
    def han_url(self) -> str:
        """``http://127.0.0.1:<port>``: the consumer's page."""
        return self.han.url

    @property
    def wan_url(self) -> str:
        """``https://127.0.0.1:<port>``: the administrator's API (mutual TLS)."""
        return self.wan.url

    def close(self) -> None:
        self.wan.stop()
        self.han.stop()
        self.wan.close()
        self.han.close()

    def __enter__(self) -> GatewayInterfaces:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def serve_gateway(
    gateway: SmartMeterGateway,
    *,
    trust: Trust,
    wan_tls: TlsFiles,
    accounts: ConsumerAccounts | None = None,
    han_port: int = 0,
    wan_port: int = 0,
) -> GatewayInterfaces:
    """Start ``gateway``'s HAN page (HTTP) and WAN API (mutual TLS) on 127.0.0.1.

    ``trust``: the metrocloud PKI's trust store, or a function returning the current one
    (with fresh CRLs), that admits administrators; TLS requires a client certificate that
    chains to its root. ``wan_tls``: the WAN side's server certificate and key (see
    :func:`metrocloud.field.wan.wan_server_identity`). ``accounts``: the consumers' HAN
    passwords, shared by both sides (default: new, in memory). Ports 0 pick free ones.
    """
    accounts = ConsumerAccounts() if accounts is None else accounts
    store = trust if isinstance(trust, TrustStore) else trust()
    root = store.root.public_bytes(Encoding.PEM)
    han = BackgroundServer(create_han_app(gateway, accounts), port=han_port)
    try:
        wan = BackgroundServer(
            create_wan_app(gateway, trust, accounts), port=wan_port, tls=wan_tls, client_ca=root
        )
    except BaseException:
        han.close()
        raise
    try:
        han.start()
        wan.start()
    except BaseException:
        han.close()
        wan.close()
        raise
    return GatewayInterfaces(gateway, accounts, han, wan)


def gateway_folder_accounts(folder: Path) -> ConsumerAccounts:
    """Consumer accounts kept as ``<folder>/han-passwords.json`` (the gateway's folder)."""
    return ConsumerAccounts(folder / "han-passwords.json")


__all__ = [
    "BackgroundServer",
    "GatewayInterfaces",
    "TlsFiles",
    "TlsScopeProtocol",
    "gateway_folder_accounts",
    "serve_gateway",
]
