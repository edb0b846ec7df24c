"""The PKI service: the CA's HTTP API (:mod:`metrocloud.pki.service`) over TLS, in the cloud.

It serves certificates from CSRs and the CRLs that every other service fetches once per
refresh interval. Each issuance, revocation and refused request goes to the PKI's own
hash-chained logbook (``pki/logbook.sqlite``) and, through the bus, to the cloud logbook;
it also forwards whatever else lands in its own logbook (the certificates the cluster issued
before the bus was up, the operator's ``metrocloud pki`` commands), so issuance and
revocation can be proven from the one cloud log.
Its TLS server certificate is its service identity (names 127.0.0.1 and localhost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from metrocloud.cloud.https import HttpsServer
from metrocloud.cloud.runtime import DataDir, Service
from metrocloud.core.events import LogEvent
from metrocloud.logbook import HashChainLogbook
from metrocloud.pki.service import create_app

OWN_LOG_POLL_S = 1.0
_log = logging.getLogger(__name__)


class PkiService(Service):
    name = "pki"
    role = "pki"

    def __init__(self, data: DataDir, options: dict[str, str] | None = None) -> None:
        super().__init__(data, options)
        self._server: HttpsServer | None = None

    @property
    def ready(self) -> bool:
        return super().ready and self._server is not None and self._server.started

    async def serve(self) -> None:
        own = HashChainLogbook(self.data.pki / "logbook.sqlite")
        pending: list[LogEvent] = []

        def audit(event: LogEvent) -> None:
            own.append(event)
            pending.append(event)

        async def forward() -> None:
            while pending:
                await self.log_event(pending[0])
                pending.pop(0)

        pki = self.data.open_pki(audit=audit)
        tail = asyncio.ensure_future(self._forward_own_log(own))
        app = create_app(pki, after_change=forward)
        self._server = HttpsServer(
            app, self.data, self.name, int(self.options["port"]), self.listen_host
        )
        try:
            await self._server.serve_until(self._stop)
        finally:
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tail
            await forward()
            pki.close()
            own.close()

    async def _forward_own_log(self, own: HashChainLogbook) -> None:
        """Forward every entry of the PKI's own logbook to the cloud log, and keep doing so.

        Certificates are also issued outside this service (the cluster at start, the
        operator's ``metrocloud pki`` commands on the same folder); their events reach the
        cloud log within a second. Events keep their ids, so a repeat adds nothing.
        """
        forwarded = 0
        while not self.stopping:
            for entry in own.entries(start=forwarded):
                await self.log_event(entry.event)
                forwarded = entry.seq + 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), OWN_LOG_POLL_S)
