"""An authority's witness node: cosigns the logbook's checkpoints over HTTPS (C2SP
``tlog-witness``, :mod:`metrocloud.logbook.witness_api`).

A witness belongs to the authority, not to the operator: it holds an authority certificate,
keeps its state in its own folder (``authority/<name>/witness.sqlite``), and neither reads
the cloud's store nor connects to its broker. It knows the log by the logbook service's
certificate (checked against the PKI and its CRLs, which it keeps fresh like every service
that checks certificates). In the embedded default the cluster runs two of them,
``witness-1`` and ``witness-2``, each its own process; an authority runs them on its own
hosts instead.
"""

from __future__ import annotations

from cryptography import x509

from metrocloud.cloud.https import HttpsServer
from metrocloud.cloud.runtime import DataDir, Service
from metrocloud.logbook.checkpoint import LOG_ORIGIN
from metrocloud.logbook.witness import Witness
from metrocloud.logbook.witness_api import create_witness_app
from metrocloud.pki import Role


class WitnessService(Service):
    role = "witness"
    uses_bus = False
    checks_certificates = True
    identity_role = Role.AUTHORITY

    def __init__(self, data: DataDir, options: dict[str, str] | None = None) -> None:
        options = options or {}
        self.name = options.get("name", "witness-1")
        super().__init__(data, options)
        self._server: HttpsServer | None = None

    @property
    def ready(self) -> bool:
        return self._server is not None and self._server.started

    def witness(self) -> Witness:
        log_certificate = x509.load_pem_x509_certificate(
            (self.data.identities / "logbook.pem").read_bytes()
        )
        return Witness(
            self.identity,
            self.data.root / "authority" / self.name / "witness.sqlite",
            log_certificate,
            self.trust,
            log_name=LOG_ORIGIN,
        )

    async def serve(self) -> None:
        app = create_witness_app(self.witness())
        self._server = HttpsServer(
            app, self.data, self.name, int(self.options["port"]), self.listen_host
        )
        await self._server.serve_until(self._stop)
