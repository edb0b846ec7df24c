"""The download service: receives update packages over HTTPS and installs them while the
cloud runs (:mod:`metrocloud.download.manager` does the checking and installing).

HTTPS on ``127.0.0.1:<port>`` (certificate from the PKI):

- ``POST /v1/packages`` with the package as the body: 200 and the outcome when installed,
  422 when refused, 500 when the install failed or was rolled back. Packages authenticate
  themselves (manufacturer signature); whoever hands one in is not trusted, and every
  attempt lands in the logbook.
- ``GET /v1/software``: this component's identification and each updated component's
  pointer (release, previous release, trial or committed).

The authority's reference list is read from ``<data>/authority/reference`` and checked on
every use (signature, authority certificate, and a serial never below the highest this
service has seen, kept in ``<data>/software/reference.serial``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nats.aio.client import Client
from nats.errors import Error as NatsError

from metrocloud.authority.identification import request_identification
from metrocloud.authority.reference import ReferenceList, ReferenceStore
from metrocloud.bus.subjects import switch_subject
from metrocloud.cloud.https import HttpsServer
from metrocloud.cloud.runtime import DataDir, Service
from metrocloud.cloud.software import exclusive_modules, updatable_host
from metrocloud.core.errors import Rejected
from metrocloud.core.software import SoftwareId
from metrocloud.download.installroot import InstallRoot
from metrocloud.download.manager import (
    DownloadManager,
    Installation,
    InstallOutcome,
    SwitchFailed,
    install_root,
)
from metrocloud.download.package import MAX_PACKAGE_BYTES
from metrocloud.pki.pem import write_atomically
from metrocloud.pki.validate import TrustStore

SWITCH_TIMEOUT_S = 60.0
"""How long a service may take to finish its messages and start on the new release."""

STATUS = {"installed": 200, "refused": 422, "failed": 500, "rolled-back": 500}


class BusSwitcher:
    """Tells a service over the bus to switch, then asks the component until it answers
    from a new process with the identification expected."""

    def __init__(self, nc: Client, trust: TrustStore, *, timeout_s: float = SWITCH_TIMEOUT_S):
        self.nc = nc
        self.trust = trust
        self.timeout_s = timeout_s

    async def _instance(self, component: str) -> str | None:
        try:
            report = await request_identification(self.nc, component, self.trust, timeout_s=2.0)
        except Rejected:
            return None
        return report.identification.instance_id

    async def switch(
        self,
        service: str,
        component: str,
        expected: SoftwareId,
        abandoned: Callable[[], bool] = lambda: False,
    ) -> None:
        before = await self._instance(component)
        try:
            await self.nc.request(switch_subject(service), component.encode(), timeout=10.0)
        except (NatsError, TimeoutError) as exc:
            if before is not None:  # it runs, but will not switch
                raise SwitchFailed(f"{service} did not take the switch request: {exc!r}") from None
            # Not running: nothing to switch; it loads the pointer when it is started.
        deadline = time.monotonic() + self.timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                report = await request_identification(self.nc, component, self.trust, timeout_s=2.0)
            except Rejected as exc:
                last = exc.detail
            else:
                ident = report.identification
                last = f"{ident.software} (instance {ident.instance_id[:8]})"
                if ident.instance_id != before and ident.software == expected:
                    return
            if abandoned():
                raise SwitchFailed(f"{service} failed to start on it and went back; last: {last}")
            await asyncio.sleep(0.25)
        raise SwitchFailed(
            f"{component} did not answer as {expected} within {self.timeout_s:.0f} s; last: {last}"
        )


class ReferenceReader:
    """The authority's current list, never older than the newest this reader accepted."""

    def __init__(self, data: DataDir, trust: TrustStore) -> None:
        self.store = ReferenceStore(data.root / "authority" / "reference")
        self.trust = trust
        self.seen_path = data.root / "software" / "reference.serial"

    def seen(self) -> int:
        try:
            return int(self.seen_path.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def __call__(self) -> ReferenceList | None:
        try:
            reference = self.store.current(self.trust)
        except Rejected:
            return None
        if reference is None or reference.serial < self.seen():
            return None
        if reference.serial > self.seen():
            self.seen_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.seen_path, f"{reference.serial}\n".encode(), 0o644)
        return reference


def create_download_app(
    manager: DownloadManager, root: InstallRoot, identification: Callable[[], dict[str, str]]
) -> FastAPI:
    app = FastAPI(title="metrocloud download manager", docs_url=None, redoc_url=None)

    @app.post("/v1/packages")
    async def push(request: Request) -> JSONResponse:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_PACKAGE_BYTES:
                return JSONResponse(
                    {"result": "refused", "reason": "malformed-package", "detail": "too large"},
                    status_code=413,
                )
        outcome: InstallOutcome = await manager.receive(bytes(body))
        return JSONResponse(outcome.to_dict(), status_code=STATUS[outcome.result])

    @app.get("/v1/software")
    async def software() -> dict[str, object]:
        pointers = {}
        for component in root.components():
            pointer = root.pointer(component)
            if pointer is not None:
                release = root.release(component, pointer.release)
                pointers[component] = {
                    **asdict(pointer),
                    "version": release.version,
                    "sequence": release.sequence,
                }
        return {"identification": identification(), "releases": pointers}

    return app


class Download(Service):
    name = "download"
    role = "download"
    checks_certificates = True

    def __init__(self, data: DataDir, options: dict[str, str] | None = None) -> None:
        super().__init__(data, options)
        self._server: HttpsServer | None = None

    @property
    def ready(self) -> bool:
        return self.js is not None and self._server is not None and self._server.started

    def manager(self) -> DownloadManager:
        assert self.nc is not None
        timeout = float(self.options.get("switch_timeout_s", SWITCH_TIMEOUT_S))
        return DownloadManager(
            install_root(self.data.root),
            self.trust,
            ReferenceReader(self.data, self.trust),
            Installation(updatable_host, exclusive_modules),
            self.log_event,
            switcher=BusSwitcher(self.nc, self.trust, timeout_s=timeout),
            actor=self.name,
        )

    async def serve(self) -> None:
        assert self.software is not None
        loaded = self.software
        app = create_download_app(
            self.manager(), install_root(self.data.root), lambda: loaded.identification.to_dict()
        )
        self._server = HttpsServer(
            app, self.data, self.name, int(self.options["port"]), self.listen_host
        )
        await self._server.serve_until(self._stop)
