"""``kill -9`` of legal in the middle of a month: every reading billed exactly once."""

from __future__ import annotations

import asyncio
import signal

from metrocloud.bus.connect import connect
from metrocloud.cloud.cluster import Cluster
from metrocloud.core.clock import READINGS_PER_DAY
from metrocloud.core.events import EventKind
from metrocloud.testbed.observe import logbook_entries, wait_for
from metrocloud.testbed.pipeline import Pipeline, PipelineConfig


def evaluated(cluster: Cluster) -> list[tuple[str, object]]:
    return [
        (e.event.subject, e.event.detail.get("seq"))
        for e in logbook_entries(cluster.data, EventKind.PROCESSING)
        if e.event.detail.get("step") == "evaluate"
    ]


def test_legal_killed_mid_month_bills_every_reading_once(cluster: Cluster) -> None:
    # a day per transmission (the default is the whole period in one): six per meter, so
    # that legal can be killed with part of the month processed and part in flight
    config = PipelineConfig(meters=3, days=6, readings_per_transmission=READINGS_PER_DAY)
    pipeline = Pipeline(cluster, config)
    pipeline.provision()
    uploads = {m: pipeline.uploads(m) for m in pipeline.meter_ids}
    first_half = [msg for m in pipeline.meter_ids for msg in uploads[m][:3]]
    second_half = [msg for m in pipeline.meter_ids for msg in uploads[m][3:]]

    asyncio.run(pipeline.register_keys())
    asyncio.run(pipeline.send(first_half + second_half[:2]))
    wait_for(lambda: len(evaluated(cluster)) >= 2, timeout_s=60)
    cluster.kill("legal", signal.SIGKILL)  # mid-stream: some processed, some in flight
    done_before = len(set(evaluated(cluster)))
    assert done_before < 3 * 6, "legal must be killed before the month is processed"

    asyncio.run(pipeline.send(second_half[2:]))
    cluster.restart("legal")
    outcomes = asyncio.run(pipeline.collect(timeout_s=120))

    for o in outcomes:
        # the index sums inside r and r' prove each reading went in exactly once
        assert o.verdict.verified, o.verdict.reason
        assert o.verdict.registers == o.reference
    work = evaluated(cluster)
    assert sorted(set(work)) == sorted((m, s) for m in pipeline.meter_ids for s in range(6))
    store = cluster.data.open_store()
    try:
        for m in pipeline.meter_ids:
            assert store.result(m, config.period.period_id) is not None
            assert store.partials(m, config.period.period_id) == []
    finally:
        store.close()


def test_storage_and_communication_restart_lose_nothing(cluster: Cluster) -> None:
    pipeline = Pipeline(cluster, PipelineConfig(meters=2, days=3))
    pipeline.provision()
    asyncio.run(pipeline.register_keys())
    messages = [msg for m in pipeline.meter_ids for msg in pipeline.uploads(m)]
    asyncio.run(pipeline.send(messages[:3]))
    cluster.kill("storage", signal.SIGKILL)
    cluster.kill("communication", signal.SIGKILL)
    asyncio.run(pipeline.send(messages[3:]))  # the broker keeps them meanwhile
    cluster.restart("communication")
    cluster.restart("storage")
    for o in asyncio.run(pipeline.collect(timeout_s=120)):
        assert o.ok, o.verdict.reason


def test_uploads_ahead_of_their_key_registration_wait_for_it(cluster: Cluster) -> None:
    """After a crash, a key registration can come back behind the uploads that need it."""
    pipeline = Pipeline(cluster, PipelineConfig(meters=1, days=2))
    pipeline.provision()
    asyncio.run(pipeline.send(pipeline.uploads("m-0001")))
    wait_for(lambda: cluster.data.logs.joinpath("communication.log").exists(), timeout_s=5)
    asyncio.run(asyncio.sleep(3.0))  # the uploads are deferred, not refused
    asyncio.run(pipeline.register_keys())
    (outcome,) = asyncio.run(pipeline.collect(timeout_s=90))
    assert outcome.ok, outcome.verdict.reason
    assert not [e for e in logbook_entries(cluster.data, EventKind.REJECTION)], (
        "no upload may be refused while its customer's key registration is on its way"
    )


def test_a_customer_who_registers_new_keys_is_billed_under_them(cluster: Cluster) -> None:
    """Legal caches evaluation keys; a new registration must replace them, not be ignored."""
    from datetime import timedelta

    from metrocloud.fhe.context import CustomerKeyPair, Encryptor
    from metrocloud.field.gateway import block_for

    first = PipelineConfig(meters=1, days=1)
    pipeline = Pipeline(cluster, first)
    pipeline.provision()
    asyncio.run(pipeline.register_keys())
    asyncio.run(pipeline.send(pipeline.uploads("m-0001")))
    (before,) = asyncio.run(pipeline.collect(timeout_s=60))
    assert before.ok, before.verdict.reason

    # the customer makes a new key pair; the next month is encrypted under it
    assert pipeline.program is not None and pipeline.gateway is not None
    program = pipeline.program
    keys = CustomerKeyPair.for_program(program, block_for(96))
    receiver = pipeline.receivers["c-0001"]
    old_tag, receiver.keys = receiver.keys.key_tag, keys
    binding = pipeline.gateway.meters["m-0001"]
    binding.encryptor = Encryptor(program.params, keys.context, keys.public_key)
    pipeline.config = PipelineConfig(
        meters=1, days=1, first_day=first.first_day + timedelta(days=1)
    )
    asyncio.run(pipeline.register_keys())
    asyncio.run(pipeline.send(pipeline.uploads("m-0001")))
    (after,) = asyncio.run(pipeline.collect(timeout_s=90))
    assert keys.key_tag != old_tag
    assert after.ok, after.verdict.reason


async def _logbook_subjects(cluster: Cluster, subjects: list[str]) -> None:
    """Set the subjects the LOGBOOK stream takes (as the broker's administrator)."""
    nc = await connect(cluster.bus_url, cluster.data.credentials("admin"), name="t", role="admin")
    try:
        js = nc.jetstream()
        config = (await js.stream_info("LOGBOOK")).config
        config.subjects = subjects
        await js.update_stream(config)
    finally:
        await nc.close()


def test_what_storage_stored_while_the_logbook_did_not_answer_is_logged_later(
    cluster: Cluster,
) -> None:
    """Storage keeps a message, then cannot log it (no stream takes ``legal.log.storage``,
    as while the logbook's stream elects a leader): the message comes again, finds itself
    stored, and its event is logged then, not skipped."""
    pipeline = Pipeline(cluster, PipelineConfig(meters=1, days=1))
    pipeline.provision()
    meter, period = pipeline.meter_ids[0], pipeline.config.period.period_id
    others = [f"legal.log.{s}" for s in cluster.services if s != "storage"]
    asyncio.run(_logbook_subjects(cluster, [*others, "legal.log.monitor"]))
    asyncio.run(pipeline.register_keys())
    asyncio.run(pipeline.send(pipeline.uploads(meter)[:-1]))  # the day, not its closing
    store = cluster.data.open_store()
    try:
        wait_for(lambda: store.readings(meter, period), timeout_s=60)
    finally:
        store.close()
    log = cluster.data.logs / "storage.log"
    wait_for(lambda: "no response from stream" in log.read_text(), timeout_s=30)
    assert not [e for e in logbook_entries(cluster.data, EventKind.STORAGE)]

    asyncio.run(_logbook_subjects(cluster, ["legal.log.>"]))

    def stored_events() -> set[str]:
        return {
            str(e.event.detail["what"]) for e in logbook_entries(cluster.data, EventKind.STORAGE)
        }

    wait_for(lambda: stored_events() == {"key-registration", "transmission"}, timeout_s=60)
    asyncio.run(pipeline.send(pipeline.uploads(meter)[-1:]))
    [outcome] = asyncio.run(pipeline.collect(timeout_s=120))
    assert outcome.ok, outcome.verdict.reason
    storage = [e.event for e in logbook_entries(cluster.data, EventKind.STORAGE)]
    assert sorted(e.event_id for e in storage) == sorted({e.event_id for e in storage})
