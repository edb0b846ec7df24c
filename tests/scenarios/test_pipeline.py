"""A billing period end to end: every bill verified, every step in the logbook."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from metrocloud.cloud.cluster import Cluster
from metrocloud.core.events import EventKind
from metrocloud.logbook.transparency import MerkleLogbook
from metrocloud.testbed.observe import flags, logbook_entries, wait_for
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig


def run(pipeline: Pipeline) -> list:  # type: ignore[type-arg]
    async def go() -> list:  # type: ignore[type-arg]
        await pipeline.register_keys()
        await pipeline.send([m for meter in pipeline.meter_ids for m in pipeline.uploads(meter)])
        return await pipeline.collect(timeout_s=90)

    return asyncio.run(go())


def test_every_bill_verifies_and_equals_the_reference(cluster: Cluster) -> None:
    pipeline = Pipeline(cluster, PipelineConfig(meters=3, days=2, error_probability=0.05))
    pipeline.provision()
    outcomes = run(pipeline)
    assert [o.meter_id for o in outcomes] == ["m-0001", "m-0002", "m-0003"]
    for o in outcomes:
        assert o.verdict.verified, o.verdict.reason
        assert o.verdict.registers == o.reference
        assert o.reference.total_register_wh > 0
    # with 5 % erroneous readings some energy lands in the error register
    assert any(o.reference.error_register_wh > 0 for o in outcomes)
    assert flags(cluster.data) == []

    def logged() -> bool:
        kinds = [e.event.kind for e in logbook_entries(cluster.data)]
        return kinds.count(EventKind.VERIFICATION_SUCCESS) == 3

    wait_for(logged)
    entries = logbook_entries(cluster.data)
    arrivals = [e for e in entries if e.event.kind is EventKind.ARRIVAL]
    # by default the whole period is one transmission: it and the closing per meter
    assert len(arrivals) == 3 * (1 + 1)
    steps = [e.event.detail.get("step") for e in entries if e.event.kind is EventKind.PROCESSING]
    assert steps.count("evaluate") == 3 * 1 and steps.count("read-out") == 3
    book = MerkleLogbook(Path(cluster.data.logbook))
    try:
        assert book.verify().ok
    finally:
        book.close()


@pytest.mark.parametrize("tariff", ["taf2", "taf3", "taf4"])
def test_every_tariff_bills_exactly_through_the_cloud(cluster: Cluster, tariff: str) -> None:
    """Through the whole pipeline: multi-part key registrations (TAF 3, 4), whole-period
    transmissions (coefficient-encoded for TAF 2, bit-sliced for TAF 3, 4), several result
    ciphertexts, bills equal to the reference."""
    pipeline = Pipeline(cluster, PipelineConfig(meters=1, days=2, tariff=tariff))
    pipeline.provision()
    uploads = pipeline.uploads("m-0001")
    assert len(uploads) == 1 + 1  # the whole period in one transmission, and the closing
    (outcome,) = run(pipeline)
    assert outcome.ok, outcome.verdict.reason
    registers = outcome.verdict.registers
    assert registers is not None and len(registers.tariff_registers_wh) == 3
    assert registers.total_register_wh == outcome.reference.total_register_wh > 0


def test_legal_bills_customers_whose_keys_exceed_its_key_budget(tmp_path: Path) -> None:
    """Two TAF 3 customers (about 90 MB of evaluation keys each) and a legal worker whose
    key budget holds one: it evicts one customer's keys for the other's and parses them
    again when that customer's turn comes; every bill is still exact."""
    cluster = Cluster(tmp_path / "data", options={"legal": {"key_cache_mb": "100"}})
    metrics = cluster.metrics_url("legal")
    cluster.start()
    try:
        pipeline = Pipeline(cluster, PipelineConfig(meters=2, days=1, tariff="taf3"))
        pipeline.provision()
        outcomes = run(pipeline)
        assert [o.meter_id for o in outcomes] == ["m-0001", "m-0002"]
        for o in outcomes:
            assert o.ok, o.verdict.reason
            assert o.verdict.registers == o.reference
        scraped = httpx.get(metrics, timeout=10).text
        evictions = re.search(r"^metrocloud_evaluation_key_evictions_total (\S+)$", scraped, re.M)
        held = re.search(r"^metrocloud_evaluation_keys_bytes (\S+)$", scraped, re.M)
        assert evictions is not None and float(evictions.group(1)) >= 1, scraped
        assert held is not None and 0 < float(held.group(1)) <= 100 * 1024 * 1024
    finally:
        cluster.stop()
