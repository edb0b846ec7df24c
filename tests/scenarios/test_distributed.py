"""The distributed layout on one machine (docs/deployment.md): a 3-node NATS JetStream
cluster with replicated streams, PostgreSQL for store and logbook, two competing legal
workers, every process started by ``metrocloud serve SERVICE --config FILE``; and a month
of readings while each service type, one broker node and the database fail in turn."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from metrocloud.bus.connect import connect
from metrocloud.bus.streams import STREAMS
from metrocloud.cli import app
from metrocloud.core.events import EventKind
from metrocloud.deploy.faults import FAULTS, run_drill
from metrocloud.deploy.layout import DistributedCluster
from metrocloud.logbook.transparency import open_logbook
from metrocloud.store import open_store
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributedCluster]:
    # PostgreSQL runs as an unprivileged user when the tests run as root: its folder lies
    # outside pytest's temporary folders, which only their owner may enter.
    database = Path(tempfile.mkdtemp(prefix="mc-layout-pg-"))
    cluster = DistributedCluster(
        tmp_path_factory.mktemp("distributed") / "cloud", database_folder=database / "pg"
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(database, ignore_errors=True)


def test_every_process_runs_from_its_own_configuration(layout: DistributedCluster) -> None:
    assert set(layout.processes) >= {"legal-1", "legal-2", "communication", "storage", "logbook"}
    for name, process in layout.processes.items():
        args = [str(a) for a in process.args]  # type: ignore[union-attr]
        assert args[2:5] == ["metrocloud.cli", "serve", layout.service_of(name)], args
        config = layout.configs / f"{name}.toml"
        assert args[-2:] == ["--config", str(config)]
        result = CliRunner().invoke(
            app, ["serve", layout.service_of(name), "--config", str(config), "--check"]
        )
        assert result.exit_code == 0, result.output
    root = layout.data.root
    assert not (root / "metrocloud.sqlite").exists() and not (root / "logbook.sqlite").exists()
    assert not layout.data.cluster_file.exists()  # each process has its file instead

    async def replicas() -> dict[str, int]:
        nc = await connect(layout.bus_url, layout.data.credentials("admin"), name="t", role="admin")
        try:
            js = nc.jetstream()
            return {s.name: (await js.stream_info(s.name)).config.num_replicas for s in STREAMS}
        finally:
            await nc.close()

    assert set(asyncio.run(replicas()).values()) == {3}


def test_a_month_survives_every_fault_and_bills_once(layout: DistributedCluster) -> None:
    pipeline = Pipeline(
        layout, PipelineConfig(meters=3, days=31, readings_per_transmission=96, seed=8)
    )
    pipeline.provision()
    asyncio.run(pipeline.register_keys())
    recoveries = run_drill(layout, pipeline)
    for r in recoveries:
        print(f"{r.fault}: back after {r.back_s:.1f} s, caught up after {r.caught_up_s:.1f} s")
    assert [r.fault for r in recoveries] == list(FAULTS)
    outcomes = asyncio.run(pipeline.collect(timeout_s=240))
    assert len(outcomes) == 3 and all(o.ok for o in outcomes), [o.verdict.reason for o in outcomes]

    period = pipeline.config.period.period_id
    store = open_store(layout.database_url)
    try:
        for meter in pipeline.meter_ids:  # each day's transmission stored once
            assert len(store.readings(meter, period)) == 31
            assert store.result(meter, period) is not None
    finally:
        store.close()
    with open_logbook(layout.logbook_url) as book:
        assert book.verify().ok
        processing = [e.event for e in book.entries(kind=EventKind.PROCESSING)]
    # as the authority checks it, straight from the database, read-only
    checked = CliRunner().invoke(app, ["logbook", "verify", layout.logbook_url])
    assert checked.exit_code == 0 and "verified:" in checked.output, checked.output
    read_outs = Counter(e.subject for e in processing if e.detail.get("step") == "read-out")
    assert read_outs == {meter: 1 for meter in pipeline.meter_ids}  # each bill computed once
    evaluations = Counter(
        (e.subject, e.detail["seq"]) for e in processing if e.detail.get("step") == "evaluate"
    )
    assert len(evaluations) == 3 * 31 and set(evaluations.values()) == {1}
    workers = Counter(e.detail.get("worker") for e in processing)
    assert set(workers) == {"legal-1", "legal-2"}, workers  # both workers took a share


def test_the_configurations_are_what_an_operator_writes(layout: DistributedCluster) -> None:
    """The supervisor's own view is a configuration file too, and every file names the
    three broker nodes and the two databases."""
    nodes = {f"{node.server_name}.toml" for node in layout.broker.nodes} if layout.broker else set()
    assert len(nodes) == 3
    for path in sorted(layout.configs.glob("*.toml")):
        text = path.read_text()
        if path.name in nodes:  # a broker node's: its address, the other two nodes'
            assert text.count('"127.0.2.') == 3 and "postgresql://" not in text, path
            continue
        assert all(f"tls://127.0.2.{n}:" in text for n in (1, 2, 3)), path
        assert "postgresql://" in text, path
    assert Path(layout.configs / "supervisor.toml").exists()


def test_every_process_listens_on_an_address_of_its_own(layout: DistributedCluster) -> None:
    """127.0.1.x stand for the hosts of the cloud's processes, 127.0.2.x for the broker
    nodes': each HTTPS service answers on its process's address, under a certificate that
    names it, and each broker node from a folder with its own key only."""
    addresses = [layout.host_of(p) for p in layout.processes]
    assert len(set(addresses)) == len(addresses)
    assert all(a.startswith("127.0.1.") for a in addresses)
    for name in ("pki", "logbook", "download", "witness-1", "monitor"):
        url = layout.url(name)
        assert url.startswith(f"https://{layout.host_of(name)}:"), url
        trust = ssl.create_default_context(cafile=str(layout.data.root / "pki" / "root.pem"))
        with httpx.Client(verify=trust, timeout=10) as web:
            assert web.get(url + "/").status_code < 500, name
    for name in layout.legal_workers:
        assert layout.metrics_url(name).startswith(f"http://{layout.host_of(name)}:")
    assert layout.broker is not None
    for n, node in enumerate(layout.broker.nodes, 1):
        assert node.host == f"127.0.2.{n}"
        assert sorted(p.name for p in (node.data_dir / "identities").glob("*.key")) == ["nats.key"]
