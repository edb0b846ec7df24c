"""Faults of the operator: a misconfigured meter, and ``metrocloud up`` under Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from metrocloud.bus.subjects import SERVICE_ROLES
from metrocloud.cloud.cluster import Cluster
from metrocloud.store import MeterRecord
from metrocloud.testbed.observe import rejections, wait_for
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig


def test_unprocessable_message_is_logged_and_dropped_others_still_bill(cluster: Cluster) -> None:
    """A meter whose tariff configuration is broken must not block the other meters."""
    pipeline = Pipeline(cluster, PipelineConfig(meters=2, days=1))
    pipeline.provision()
    store = cluster.data.open_store()
    try:
        broken = store.meter("m-0002")
        assert broken is not None
        store.register_meter(
            MeterRecord(
                broken.meter_id, broken.gateway_id, broken.customer_id, "taf1", {"price": -1}
            )
        )
    finally:
        store.close()
    asyncio.run(pipeline.register_keys())
    asyncio.run(pipeline.send([m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)]))

    failed = wait_for(
        lambda: [r for r in rejections(cluster.data) if r["reason"] == "processing-failed"],
        timeout_s=60,
    )
    assert isinstance(failed, list)
    assert {str(r["subject"]) for r in failed} >= {"legal.in.reading.m-0002"}
    assert all("taf1" in str(r["detail"]) for r in failed)
    # the healthy meter is billed and verified all the same
    pipeline.owner.pop("m-0002")
    (outcome,) = asyncio.run(pipeline.collect(timeout_s=60))
    assert outcome.meter_id == "m-0001" and outcome.ok, outcome.verdict.reason


def test_up_runs_until_interrupted_then_stops_cleanly(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "metrocloud"
    proc = subprocess.Popen(
        [str(exe), "up", "--data", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, COLUMNS="200", NO_COLOR="1"),
        start_new_session=True,  # its own process group: a failed test kills it all
    )
    try:
        ready = tmp_path / "data" / "run"
        # the services, two witnesses and the verification monitor
        processes = {*SERVICE_ROLES, "witness-1", "witness-2", "monitor"}
        wait_for(lambda: {p.stem for p in ready.glob("*.ready")} == processes, timeout_s=60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # up, its services, witnesses and broker
            proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "metrocloud is up" in text and "stopped cleanly" in text
    assert "Traceback" not in text
    assert list(ready.glob("*.ready")) == []  # every service went down
