"""The authority's verification monitor as a process: gathers a snapshot every few seconds
and serves the page (:mod:`metrocloud.authority.monitor_web`) over HTTPS.

The monitor is the authority's node, not the operator's: it holds an **authority**
certificate, keeps its own state in ``<data>/authority/monitor/``, and reads only what the
components expose. On the bus it is the ``monitor`` role, which may only ask
``software.identify.<component>``; it writes nothing into the cloud's logbook (its events
go to its own process log) and answers no identification request itself: its own
identification is judged from what this process loaded, and shown on the page.

Options (``--option KEY=VALUE``): ``port`` (required), ``refresh_s`` (seconds between
snapshots, default 5), ``timeout_s`` (how long each component may take to answer,
default 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from cryptography import x509

from metrocloud.authority.monitor import (
    LogbookSource,
    LogbookWatch,
    MonitorSnapshot,
    gather_snapshot,
    pending_snapshot,
)
from metrocloud.authority.monitor_web import create_monitor_app
from metrocloud.authority.reference import ReferenceStore
from metrocloud.cloud.https import HttpsServer
from metrocloud.cloud.runtime import DataDir, Service
from metrocloud.core.events import EventKind
from metrocloud.core.software import LegalComponent, LoadedComponent
from metrocloud.pki import Role

_log = logging.getLogger(__name__)

REFRESH_S = 5.0
TIMEOUT_S = 2.0


def monitor_component() -> LegalComponent:
    """The monitor's entry in the table of legally relevant components."""
    from metrocloud.cloud.software import component

    return component("monitor")


def legal_components() -> list[str]:
    """Every legally relevant component the monitor shows, by name."""
    from metrocloud.cloud.software import all_components

    return sorted(all_components())


def embedded_logbook(data: DataDir, service: Service) -> LogbookSource | None:
    """The logbook of the embedded cloud in ``data`` as an auditor sees it (as
    ``metrocloud logbook audit --data`` does); None if the cloud has none."""
    cluster = data.cluster()
    url = cluster.get("logbook_url")
    if not url:
        return None
    names = sorted(cluster.get("witnesses", {}))

    def certificate(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((data.identities / f"{name}.pem").read_bytes())

    return LogbookSource(
        url=str(url),
        tls_trust=data.pki / "root.pem",
        log_certificate=certificate("logbook"),
        witnesses={n: certificate(n) for n in names},
        quorum=int(cluster.get("quorum", len(names))),
        reader=service.identity,
        state=data.root / "authority" / service.name / "accepted-head.json",
    )


class MonitorService(Service):
    name = "monitor"
    role = "monitor"
    checks_certificates = True
    identity_role = Role.AUTHORITY

    def __init__(self, data: DataDir, options: dict[str, str] | None = None) -> None:
        super().__init__(data, options)
        self.refresh_s = float(self.options.get("refresh_s", REFRESH_S))
        self.timeout_s = float(self.options.get("timeout_s", TIMEOUT_S))
        self.reference = ReferenceStore(data.root / "authority" / "reference")
        self.snapshot: MonitorSnapshot | None = None
        self.no_logbook = "no logbook configured"
        self._server: HttpsServer | None = None
        self._badges: dict[str, tuple[bool, str]] = {}
        """Each component's last (green, reason), to log changes only."""

    @functools.cached_property
    def components(self) -> dict[str, LoadedComponent]:
        """None to answer for on the bus: the monitor asks, it is not asked (its role may not
        subscribe ``software.identify.*``, and its certificate is the authority's, not a
        service's); its own identification is :attr:`own`, judged by itself and shown."""
        return {}

    @functools.cached_property
    def own(self) -> LoadedComponent:
        """The monitor's own legally relevant code, as this process loaded it."""
        return monitor_component().load()

    @property
    def ready(self) -> bool:
        return self._server is not None and self._server.started

    async def log_verdicts(self, snapshot: MonitorSnapshot) -> None:
        """Put each badge that changed into the logbook: ``verification-failure`` when a
        component turns red (or is red at the first check), ``verification-success`` when
        it turns green again. The page shows the state; the logbook keeps when it changed.
        Before the authority approved a list there is nothing to log."""
        if snapshot.reference_serial is None:
            return  # nothing approved yet: nothing to be verified against, nothing to log
        for status in snapshot.components:
            before = self._badges.get(status.component)
            now = (status.green, status.reason)
            self._badges[status.component] = now
            if before == now or (before is None and status.green):
                continue
            report = status.report
            await self.log(
                EventKind.VERIFICATION_SUCCESS if status.green else EventKind.VERIFICATION_FAILURE,
                status.component,
                {
                    "check": "software",
                    "reason": status.reason,
                    "detail": status.detail,
                    "software": None if report is None else report.identification.to_dict(),
                    "changed": [] if report is None else list(report.changed),
                },
            )

    async def gather(self, watch: LogbookWatch | None, components: list[str]) -> MonitorSnapshot:
        return await gather_snapshot(
            components=components,
            trust=self.trust,
            reference=self.reference,
            own=self.own,
            own_signer=self.identity.common_name,
            nc=self.nc,
            watch=watch,
            timeout_s=self.timeout_s,
            no_logbook=self.no_logbook,
        )

    def current(self) -> MonitorSnapshot:
        assert self.snapshot is not None
        return self.snapshot

    async def refresh(self, watch: LogbookWatch | None, components: list[str]) -> None:
        """Gather a snapshot now and then every ``refresh_s`` seconds until stopped."""
        while not self.stopping:
            try:
                self.snapshot = await self.gather(watch, components)
                await self.log_verdicts(self.snapshot)
            except Exception:  # gather_snapshot does not raise; keep serving the last one
                _log.exception("%s: gathering a snapshot failed", self.name)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.refresh_s)

    async def serve(self) -> None:
        _log.info("%s: own identification %s", self.name, self.own.identification.to_dict())
        components = legal_components()
        try:
            source = embedded_logbook(self.data, self)
        except (OSError, ValueError, KeyError) as exc:  # shown on the page, not fatal
            _log.error("%s: cannot set up the logbook check: %r", self.name, exc)
            source, self.no_logbook = None, f"cannot set up the logbook check: {exc}"
        watch = LogbookWatch(source, self.trust) if source is not None else None
        self.snapshot = pending_snapshot(components, self.own)  # until the first is gathered
        app = create_monitor_app(self.current)
        self._server = HttpsServer(
            app, self.data, self.name, int(self.options["port"]), self.listen_host
        )
        refresher = asyncio.ensure_future(self.refresh(watch, components))
        try:
            await self._server.serve_until(self._stop)
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
