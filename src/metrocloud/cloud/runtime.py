"""What every cloud service shares: its identity, store, bus connection and logbook link.

A service is one process (``metrocloud serve <name>``). It connects to the broker as its own
user, pulls from its durable consumers, and acknowledges a message only after the message's
effect is stored and the matching logbook event is durably in the LOGBOOK stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from metrocloud.bus.connect import connect, tls_credentials
from metrocloud.bus.server import Credentials, bus_identity_name
from metrocloud.bus.streams import fetch, pull
from metrocloud.bus.subjects import identify_subject, switch_subject
from metrocloud.cloud.config import ServiceConfig
from metrocloud.core.clock import now_iso
from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.core.messages import SoftwareReport, seal
from metrocloud.core.software import LoadedComponent
from metrocloud.metrics import ComponentMetrics, MetricsServer, serve_metrics
from metrocloud.pki import FileKeyStore, Identity, IdentityStore, Pki, Role, TrustStore
from metrocloud.pki.authority import Audit
from metrocloud.pki.client import PkiClient, PkiUnreachable
from metrocloud.pki.keys import PASSPHRASE_ENV
from metrocloud.pki.pem import write_atomically
from metrocloud.store import Store, open_store

_log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]

CRL_REFRESH_S = 30.0
"""How often services fetch CRLs from the PKI service, unless cluster.json says otherwise."""
MAX_ATTEMPTS = 5
RETRY_DELAY_S = 1.0
TRANSIENT_DELAY_MAX_S = 8.0
"""The longest wait before a message that met a busy broker or database comes again (the
wait doubles from :data:`RETRY_DELAY_S` with each attempt): a broker node's election is
over in seconds, and a longer wait only delays catching up."""
# Failures of infrastructure, not of the message: retried for as long as it takes.
TRANSIENT: tuple[type[BaseException], ...] = (
    NatsError,
    TimeoutError,
    asyncio.TimeoutError,
    sqlite3.OperationalError,
    psycopg.OperationalError,  # PostgreSQL restarting or unreachable
    OSError,
)


@dataclass(frozen=True)
class DataDir:
    """The embedded default keeps everything under one folder.

    A process of a distributed deployment has a folder too (its keys, certificates, trust
    anchors and install root), and a :class:`~metrocloud.cloud.config.ServiceConfig` that
    says what ``cluster.json`` says when embedded, and where the store and logbook live.
    """

    root: Path
    config: ServiceConfig | None = field(default=None, compare=False)

    @property
    def store(self) -> Path:
        return self.root / "metrocloud.sqlite"

    @property
    def logbook(self) -> Path:
        return self.root / "logbook.sqlite"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def identities(self) -> Path:
        return self.root / "identities"

    def passphrase(self) -> bytes:
        """The passphrase of every key file: ``$METROCLOUD_KEY_PASSPHRASE``, else a random one
        made at first start and kept in ``secrets/key-passphrase`` (mode 0600).

        The file is the embedded default's convenience; a deployment that keeps the data
        folder on shared storage gives the passphrase in the environment instead.
        """
        given = os.environ.get(PASSPHRASE_ENV)
        if given:
            return given.encode()
        path = self.root / "secrets" / "key-passphrase"
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(path, secrets.token_urlsafe(32).encode(), 0o600)
        return path.read_bytes().strip()

    def trust_store(self) -> TrustStore:
        """Root, sub-CAs and the CRLs as last published in the PKI folder."""
        return TrustStore.from_directory(self.pki)

    def open_pki(self, audit: Audit | None = None) -> Pki:
        """The PKI in ``pki/``; made at first use with CA keys as encrypted files.

        A PKI made beforehand with ``metrocloud pki init <data>/pki`` (CA keys in an HSM,
        say) is used as it is.
        """
        if not (self.pki / "pki.json").exists():
            keys = FileKeyStore(self.pki / "private", self.passphrase())
            return Pki.init(self.pki, keys, audit=audit)
        return Pki.open(self.pki, passphrase=self.passphrase(), audit=audit)

    def identities_store(self, pki: Pki | None = None) -> IdentityStore:
        """Identity keys and chains; with ``pki`` missing ones are issued."""
        trust = pki.trust_store() if pki is not None else self.trust_store()
        keys = FileKeyStore(self.identities, self.passphrase())
        return IdentityStore(self.identities, keys, trust, pki=pki)

    def issue_identity(self, name: str, role: Role) -> Identity:
        """Identity ``name`` of ``role``, issued from the folder's PKI if it is new (the
        embedded setup's way to equip an authority, a manufacturer, a test gateway)."""
        pki = self.open_pki()
        try:
            return self.identities_store(pki).identity(name, role)
        finally:
            pki.close()

    @property
    def cluster_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def cluster(self) -> dict[str, Any]:
        """Where the broker and the other services are: from the process's configuration,
        else from ``cluster.json`` (the embedded supervisor's)."""
        if self.config is not None:
            return self.config.cluster()
        data = json.loads(self.cluster_file.read_text())
        assert isinstance(data, dict)
        return data

    def credentials(self, role: str) -> Credentials:
        """TLS client credentials of bus role ``role`` (mutual TLS, no password).

        The certificate and encrypted key of identity ``bus-<role>`` (issued by the cluster
        at start), trusting the PKI root for the NATS server's certificate.
        """
        name = bus_identity_name(role)
        return tls_credentials(
            role,
            ca_file=self.pki / "root.pem",
            cert_file=self.identities / f"{name}.pem",
            key_file=self.identities / f"{name}.key",
            password=self.passphrase(),
        )

    @property
    def store_location(self) -> str | Path:
        """The store: the configured database, else this folder's SQLite file."""
        configured = None if self.config is None else self.config.storage.database
        return configured or self.store

    @property
    def logbook_location(self) -> str | Path:
        """The logbook's Merkle tree: the configured database, else this folder's file."""
        configured = None if self.config is None else self.config.storage.logbook
        return configured or self.logbook

    def open_store(self) -> Store:
        return open_store(self.store_location)


class Service(ABC):
    """Base of the cloud services; subclasses implement :meth:`serve`."""

    name: str = ""
    role: str = ""
    checks_certificates: bool = False
    """Whether it verifies certificates, and so keeps its CRLs fresh from the PKI service."""
    uses_bus: bool = True
    """Whether it connects to the broker (an authority's witness, say, does not)."""
    identity_role: Role = Role.SERVICE

    @classmethod
    def check_options(cls, options: dict[str, str]) -> None:
        """:class:`ConfigurationError` for an option of this service that it cannot use;
        a service without options of its own to check accepts them all."""
        return None

    def __init__(self, data: DataDir, options: dict[str, str] | None = None) -> None:
        self.data = data
        self.options = options or {}
        self.check_options(self.options)
        self.trust: TrustStore = data.trust_store()
        self.identity: Identity = data.identities_store().identity(self.name, self.identity_role)
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._stop = asyncio.Event()
        self._refresher: asyncio.Future[None] | None = None
        self.restart_requested = False
        """Set when the service stopped to start again on new code."""
        self.metrics = ComponentMetrics()
        """What this process counts, served on its metrics port (``metrics_port``)."""
        self._metrics_server: MetricsServer | None = None

    @functools.cached_property
    def components(self) -> dict[str, LoadedComponent]:
        """The legally relevant components this process runs, as loaded: the service's own
        and, for legal, its tariff programs."""
        from metrocloud.cloud.software import hosted_by, load  # the table names this module

        found = {name: load(name) for name in hosted_by(self.name)}
        return {name: loaded for name, loaded in found.items() if loaded is not None}

    @property
    def software(self) -> LoadedComponent | None:
        """This service's own legally relevant code as loaded, if it is legally relevant."""
        return self.components.get(self.name)

    @functools.cached_property
    def store(self) -> Store:
        """The cloud's store, opened at first use."""
        return self.data.open_store()

    async def start(self) -> None:
        self.serve_metrics()
        if self.uses_bus:
            url = str(self.data.cluster()["nats_url"])
            self.nc = await connect(
                url, self.data.credentials(self.role), name=self.name, role=self.role
            )
            self.js = self.nc.jetstream(timeout=30.0)
            for name, loaded in self.components.items():
                await self.nc.subscribe(
                    identify_subject(name), cb=functools.partial(self.identify, loaded)
                )
            if self.updatable:
                await self.nc.subscribe(switch_subject(self.name), cb=self.switch)
        pki_url = self.data.cluster().get("pki_url")
        if pki_url and self.checks_certificates:
            self._refresher = asyncio.ensure_future(self.refresh_crls(str(pki_url)))

    @property
    def listen_host(self) -> str:
        """The address this process listens on (HTTPS, metrics): option ``host``, else
        127.0.0.1; on another host its address on the cloud's private network."""
        return self.options.get("host", "127.0.0.1")

    def serve_metrics(self) -> None:
        """Serve ``GET /metrics`` on :attr:`listen_host` at option ``metrics_port`` (none
        without it)."""
        port = self.options.get("metrics_port")
        if port is None:
            return
        for loaded in self.components.values():
            ident = loaded.identification
            self.metrics.loaded(ident.component, ident.version, ident.checksum)
        self._metrics_server = serve_metrics(self.metrics, int(port), self.listen_host)

    @property
    def updatable(self) -> bool:
        """Whether the download manager may tell this service to switch to new code."""
        from metrocloud.cloud.software import UPDATABLE_HOSTS

        return self.uses_bus and self.name in UPDATABLE_HOSTS

    async def identify(self, loaded: LoadedComponent, msg: Msg) -> None:
        """Answer an identification request: what was loaded, and what changed on disk since,
        signed with this service's identity."""
        ident = loaded.identification
        report = SoftwareReport(
            component=ident.component,
            instance_id=ident.instance_id,
            name=ident.name,
            version=ident.version,
            checksum=ident.checksum,
            changed=loaded.changed_modules(),
            sent_at=now_iso(),
        )
        await msg.respond(seal(self.identity, report))

    async def switch(self, msg: Msg) -> None:
        """The download manager installed new code: finish the messages held, acknowledge
        them, and start again (:mod:`metrocloud.cloud.serve` re-executes the process)."""
        _log.info("%s: switching to the installed release", self.name)
        self.restart_requested = True
        await msg.respond(b"switching")
        await self.stop()

    @property
    def ready(self) -> bool:
        """Whether the service is connected and serving (the supervisor waits for this)."""
        return self.js is not None

    async def refresh_crls(self, url: str) -> None:
        """Fetch every CRL from the PKI service once per refresh interval, for good.

        A revoked certificate is refused from the first refresh after its revocation. An
        unreachable PKI keeps the CRLs held until they expire (then every certificate is
        refused: fail closed); a CRL that does not check out is refused and logged.
        """
        interval = float(self.data.cluster().get("crl_refresh_s", CRL_REFRESH_S))
        client = PkiClient.connect(url, tls_trust=self.data.pki / "root.pem")
        try:
            while not self.stopping:
                try:
                    if await asyncio.to_thread(client.refresh, self.trust):
                        _log.info("%s: new CRLs from %s", self.name, url)
                except PkiUnreachable as exc:
                    _log.warning("%s: CRL refresh failed: %s", self.name, exc)
                except Rejected as exc:
                    await self.log(
                        EventKind.REJECTION, "crl", {"reason": exc.reason, "detail": exc.detail}
                    )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), interval)
        finally:
            client.close()

    async def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.nc is not None:
            await self.nc.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if "store" in self.__dict__:
            self.store.close()

    async def log(
        self,
        kind: EventKind,
        subject: str,
        detail: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> None:
        """Durably hand one event to the logbook (idempotent when ``event_id`` repeats)."""
        event = LogEvent(actor=self.name, kind=kind, subject=subject, detail=detail or {})
        if event_id is not None:
            event = LogEvent(
                actor=event.actor,
                kind=kind,
                subject=subject,
                detail=event.detail,
                time=event.time,
                event_id=event_id,
            )
        await self.log_event(event)

    async def log_event(self, event: LogEvent) -> None:
        """Durably hand an event made elsewhere (by the PKI, say) to the logbook.

        A service without the bus has no way into the cloud's logbook: it keeps its own
        records and writes the event to its process log.
        """
        if not self.uses_bus:
            _log.info("%s: %s %s %s", self.name, event.kind.value, event.subject, event.detail)
            return
        assert self.js is not None
        if event.kind is EventKind.REJECTION:
            self.metrics.rejected(str(event.detail.get("reason", "unknown")))
        subject = f"legal.log.{self.name}"
        await self.js.publish(subject, event.to_json(), headers={"Nats-Msg-Id": event.event_id})
        self.metrics.sent(subject)

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        """JetStream publish that returns only once the stream has stored the message."""
        assert self.js is not None
        await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
        self.metrics.sent(subject)

    async def consume(self, durable: str, handler: Handler, batch: int = 8) -> None:
        """Pull from a durable consumer until stopped; the handler acks or naks."""
        assert self.js is not None
        sub = await pull(self.js, durable)
        pending = self.metrics.pending.labels(durable)
        while not self._stop.is_set():
            msgs = await fetch(sub, batch=batch, timeout_s=1.0)
            pending.set(msgs[-1].metadata.num_pending if msgs else 0)
            for msg in msgs:
                self.metrics.received(msg.subject)
                try:
                    with self.metrics.step(durable):
                        await handler(msg)
                except Exception as exc:
                    self.metrics.failed(exc)
                    await self.failed(msg, exc)

    async def failed(self, msg: Msg, exc: Exception) -> None:
        """A handler raised: retry a few times, then log the message as failed and drop it.

        A message that can never be processed (a poison message) must not block the
        consumer forever; it ends in the logbook with the error, where an operator sees it.
        """
        attempts = msg.metadata.num_delivered
        if isinstance(exc, TRANSIENT):  # the broker or the disk is busy: never give up
            _log.warning("%s: %s on %s; retrying", self.name, exc, msg.subject)
            await msg.nak(delay=min(TRANSIENT_DELAY_MAX_S, RETRY_DELAY_S * 2**attempts))
            return
        if attempts < MAX_ATTEMPTS:
            _log.exception(
                "%s: attempt %d on %s failed; retrying", self.name, attempts, msg.subject
            )
            await msg.nak(delay=RETRY_DELAY_S * attempts)
            return
        _log.error(
            "%s: giving up on %s after %d attempts: %r", self.name, msg.subject, attempts, exc
        )
        await self.log(
            EventKind.REJECTION,
            msg.subject.rsplit(".", 1)[-1],
            {
                "reason": "processing-failed",
                "detail": f"{type(exc).__name__}: {exc}",
                "subject": msg.subject,
                "attempts": attempts,
            },
            event_id=f"failed-{msg.metadata.stream}-{msg.metadata.sequence.stream}",
        )
        await msg.term()

    @abstractmethod
    async def serve(self) -> None:
        """The service's work loop; returns when :meth:`stop` was called."""

    async def run(self) -> None:
        await self.start()
        try:
            started: dict[str, Any] = {"event": "started"}
            if self.software is not None:  # the code this process runs, as loaded
                started["software"] = self.software.identification.to_dict()
            await self.log(EventKind.SERVICE, self.name, started)
            await self.serve()
        finally:
            await self.close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


def delivered_before(msg: Msg) -> bool:
    """True when JetStream has delivered this very message before (a redelivery)."""
    return msg.metadata.num_delivered > 1
