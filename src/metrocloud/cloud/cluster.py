"""The embedded default: a NATS server and every service as its own process on one host."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from metrocloud.bus.connect import connect
from metrocloud.bus.server import EmbeddedNatsServer
from metrocloud.bus.streams import ensure_streams
from metrocloud.bus.subjects import SERVICE_ROLES
from metrocloud.cloud.runtime import DataDir
from metrocloud.core.errors import MetrocloudError
from metrocloud.pki import IdentityStore, Role

MAX_PAYLOAD = 32 * 1024 * 1024
# Only legal does heavy FHE work; the others get one OpenMP thread each.
THREADS = {"legal": "2"}


class ClusterError(MetrocloudError):
    pass


class Cluster:
    """Starts, watches and stops the embedded deployment under one data folder."""

    def __init__(
        self,
        root: Path,
        *,
        services: tuple[str, ...] = SERVICE_ROLES,
        options: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.data = DataDir(root)
        self.services = services
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.server = EmbeddedNatsServer(root, max_payload=MAX_PAYLOAD)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle ------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> None:
        for folder in (self.data.root, self.data.logs, self.data.run):
            folder.mkdir(parents=True, exist_ok=True)
        self.server.start()
        asyncio.run(self._prepare_bus())
        ids = IdentityStore(self.data.pki)
        for name in self.services:
            ids.identity(name, Role.SERVICE)
        self.data.cluster_file.write_text(json.dumps({"nats_url": self.server.url}))
        for name in self.services:
            self.spawn(name)
        self.wait_ready(self.services, timeout_s)

    async def _prepare_bus(self) -> None:
        nc = await connect(
            self.server.url, self.server.credentials("admin"), name="supervisor", role="admin"
        )
        try:
            await ensure_streams(nc.jetstream())
        finally:
            await nc.close()

    def spawn(self, name: str) -> None:
        (self.data.run / f"{name}.ready").unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "metrocloud.cloud.serve", name, "--data", str(self.data.root)]
        for key, value in self.options.get(name, {}).items():
            cmd += ["--option", f"{key}={value}"]
        env = dict(os.environ, OMP_NUM_THREADS=THREADS.get(name, "1"))
        log = (self.data.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def wait_ready(self, names: tuple[str, ...], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        for name in names:
            while not (self.data.run / f"{name}.ready").exists():
                proc = self.processes[name]
                if proc.poll() is not None:
                    raise ClusterError(f"service {name} exited: {self.log_tail(name)}")
                if time.monotonic() > deadline:
                    raise ClusterError(f"service {name} not ready: {self.log_tail(name)}")
                time.sleep(0.05)

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.data.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one service process (``kill -9`` by default), as a crash would."""
        proc = self.processes[name]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        if self.processes[name].poll() is None:
            self.kill(name, signal.SIGTERM)
        self.spawn(name)
        self.wait_ready((name,), timeout_s)

    def dead(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is not None]

    def stop(self, timeout_s: float = 15.0) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.server.stop()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
