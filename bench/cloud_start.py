"""What starting an embedded cloud costs, with and without the fork server (cloud/launcher.py).

Starts the embedded cloud (broker, 8 services, 2 witnesses, the verification monitor)
``--repeat`` times with each way of starting processes, alternating, and stops it again.
For each start it records:

* the wall time of ``Cluster.start()``;
* the CPU time the cloud's processes spent until ready, summed over their ``/proc/<pid>/stat``
  (the broker's included);
* with the fork server, the CPU time of its zygote (its imports), spent once per supervisor.

Prints a Markdown table of the medians. Usage: ``python bench/cloud_start.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import machine
from metrocloud.cloud import launcher
from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.launcher import SPAWN_ENV

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_once(mode: str) -> tuple[float, float, int]:
    os.environ[SPAWN_ENV] = mode
    root = Path(tempfile.mkdtemp(prefix="bench-start-"))
    cluster = Cluster(root)
    try:
        t0 = time.perf_counter()
        cluster.start()
        wall = time.perf_counter() - t0
        pids = [p.pid for p in cluster.processes.values()]
        broker = cluster.server._proc  # the NATS server
        if broker is not None:
            pids.append(broker.pid)
        return wall, sum(cpu_s(pid) for pid in pids), len(pids)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float, int]]] = {"exec": [], "fork": []}
    for _ in range(args.repeat):
        for mode in runs:
            runs[mode].append(start_once(mode))
    zygote = launcher._LAUNCHER
    zygote_cpu = cpu_s(zygote.zygote.pid) if zygote is not None else float("nan")
    print(f"Machine: {machine()}\n")
    print("| processes started by | processes | start, wall (s) | start, CPU of the cloud (s) |")
    print("| --- | ---: | ---: | ---: |")
    for mode, label in (("exec", "a fresh interpreter each"), ("fork", "the fork server")):
        walls, cpus, counts = zip(*runs[mode], strict=True)
        print(
            f"| {label} | {counts[0]} | {statistics.median(walls):.2f} "
            f"| {statistics.median(cpus):.2f} |"
        )
    print(f"\nThe zygote's own CPU time (its imports, once per supervisor): {zygote_cpu:.2f} s")


if __name__ == "__main__":
    main()
