"""Benchmark of software updates on a running embedded cloud (``metrocloud.download``).

Starts a cloud in a temporary folder, has the authority approve a series of tariff-taf1
releases, and pushes them one after another to the download service over HTTPS, timing:

1. a refused package (a tampered file): how long the checks take before anything is
   written;
2. a whole install: checks, two preflight processes (the running and the new
   identification), staging, the switch of the legal service and the wait for the new
   identification;
3. the time legal answers no identification during a switch (the gap in service), measured
   from outside by asking every 50 ms over the bus while the package is pushed;
4. a manufacturer's build (``build_update``: one preflight process, signing).

Usage: ``python bench/software_update.py [--releases N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from benchlib import machine
from metrocloud.authority.identification import request_identification
from metrocloud.bus.connect import connect
from metrocloud.cli import app
from metrocloud.cloud.cluster import Cluster
from metrocloud.core.errors import Rejected
from metrocloud.core.http import open_http
from metrocloud.download.build import build_update
from metrocloud.download.package import pack, unpack
from metrocloud.pki import Role

TAF1 = "metrocloud.tariffs.taf1"


def source(version: str) -> bytes:
    text = Path(__import__(TAF1, fromlist=["x"]).__file__).read_text()
    return text.replace('version = "2.0.0"', f'version = "{version}"').encode()


def gaps_while(cluster: Cluster, stop: threading.Event, found: list[float]) -> None:
    """Longest stretch without an identification answer from legal, while ``stop`` is
    unset (asked every 50 ms)."""
    trust = cluster.data.trust_store()

    async def watch() -> None:
        nc = await connect(
            cluster.server.url, cluster.data.credentials("monitor"), name="b", role="monitor"
        )
        last_answer = time.perf_counter()
        longest = 0.0
        try:
            while not stop.is_set():
                try:
                    await request_identification(nc, "tariff-taf1", trust, timeout_s=0.2)
                    now = time.perf_counter()
                    longest = max(longest, now - last_answer)
                    last_answer = now
                except Rejected:
                    pass
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
        found.append(longest)

    asyncio.run(watch())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--releases", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp) / "data", monitor=False)
        cluster.start()
        try:
            maker = cluster.data.issue_identity("acme", Role.MANUFACTURER)
            builds, packages = [], []
            for n in range(1, args.releases + 1):
                t0 = time.perf_counter()
                raw = build_update(maker, "tariff-taf1", f"2.{n}.0", n, {TAF1: source(f"2.{n}.0")})
                builds.append(time.perf_counter() - t0)
                path = Path(tmp) / f"taf1-{n}.mcu"
                path.write_bytes(raw)
                packages.append(path)
            approve = ["authority", "approve", "--data", str(cluster.data.root)]
            result = CliRunner().invoke(
                app, [*approve, *(a for p in packages for a in ("--package", str(p)))]
            )
            assert result.exit_code == 0, result.output

            metadata, files = unpack(packages[0].read_bytes())
            tampered = pack(metadata, {TAF1: files[TAF1] + b"\n"})
            refusals, installs, gaps = [], [], []
            with open_http(
                cluster.url("download"), tls_trust=cluster.data.pki / "root.pem", timeout_s=300
            ) as client:
                for path in packages:
                    t0 = time.perf_counter()
                    refused = client.post("/v1/packages", content=tampered)
                    refusals.append(time.perf_counter() - t0)
                    assert refused.status_code == 422, refused.text
                    stop, found = threading.Event(), []
                    watcher = threading.Thread(target=gaps_while, args=(cluster, stop, found))
                    watcher.start()
                    time.sleep(0.3)
                    t0 = time.perf_counter()
                    response = client.post("/v1/packages", content=path.read_bytes())
                    installs.append(time.perf_counter() - t0)
                    time.sleep(0.3)
                    stop.set()
                    watcher.join()
                    gaps.extend(found)
                    assert response.status_code == 200, response.text
        finally:
            cluster.stop()
    print(f"machine: {machine()}")
    print(f"releases installed: {len(installs)} (tariff-taf1, legal switched each time)")
    for what, samples in (
        ("refused package (tampered file)", refusals),
        ("whole install, push to new identification", installs),
        ("legal without an answer during the switch", gaps),
        ("manufacturer build (preflight + signing)", builds),
    ):
        print(
            f"{what:<44} median {statistics.median(samples) * 1000:8.1f} ms   "
            f"max {max(samples) * 1000:8.1f} ms"
        )


if __name__ == "__main__":
    main()
