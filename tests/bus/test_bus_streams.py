"""ensure_streams: every stream and durable consumer of subjects.py, idempotently."""

from __future__ import annotations

import asyncio
import logging

import pytest
from bus_helpers import open_bus
from nats.js.api import AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from metrocloud.bus.server import EmbeddedNatsServer
from metrocloud.bus.streams import consumer_spec, ensure_streams
from metrocloud.bus.subjects import CONSUMERS, STREAMS
from metrocloud.core.errors import ConfigurationError


async def _snapshot(js: JetStreamContext) -> dict[str, object]:
    """Config and creation time of every stream and consumer (creation changes on recreate)."""
    snap: dict[str, object] = {}
    for s in STREAMS:
        info = await js.stream_info(s.name)
        snap[s.name] = (info.config, info.created)
    for c in CONSUMERS:
        cinfo = await js.consumer_info(c.stream, c.durable)
        snap[f"{c.stream}.{c.durable}"] = (cinfo.config, cinfo.created)
    return snap


def test_streams_and_consumers_match_the_specs(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server) as bus:  # runs ensure_streams once as admin
            js = bus.clients[0].jetstream()
            for s in STREAMS:
                cfg = (await js.stream_info(s.name)).config
                assert sorted(cfg.subjects or []) == sorted(s.subjects)
                assert cfg.storage == StorageType.FILE
                assert cfg.retention == RetentionPolicy(s.retention)
                assert cfg.max_age == pytest.approx(s.max_age_s)
                assert cfg.duplicate_window == pytest.approx(s.duplicate_window_s)
                assert bool(cfg.allow_direct) == s.allow_direct
            for c in CONSUMERS:
                ccfg = (await js.consumer_info(c.stream, c.durable)).config
                assert ccfg.durable_name == c.durable
                assert ccfg.deliver_subject is None  # pull consumer
                assert ccfg.ack_policy == AckPolicy.EXPLICIT
                assert ccfg.deliver_policy == DeliverPolicy.ALL
                assert ccfg.filter_subject == c.filter_subject
                assert ccfg.ack_wait == pytest.approx(c.ack_wait_s)
                assert ccfg.max_deliver == c.max_deliver

    asyncio.run(main())


def test_ensure_streams_is_idempotent(
    server: EmbeddedNatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with open_bus(server) as bus:
            js = bus.clients[0].jetstream()
            before = await _snapshot(js)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="metrocloud.bus.streams"):
                await ensure_streams(js)
                await ensure_streams(js)
            assert caplog.records == []  # nothing created, nothing updated
            assert await _snapshot(js) == before

    asyncio.run(main())


def test_ensure_streams_repairs_editable_drift(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server, streams=False) as bus:
            js = (await bus.connect("admin")).jetstream()
            await js.add_stream(
                StreamConfig(
                    name="LOGBOOK",
                    subjects=["legal.log.communication"],
                    storage=StorageType.FILE,
                    max_age=60.0,
                )
            )
            spec = consumer_spec("logbook")
            await js.add_consumer(
                "LOGBOOK",
                durable_name="logbook",
                filter_subject="legal.log.communication",
                ack_wait=5.0,
                ack_policy=AckPolicy.EXPLICIT,
            )
            await ensure_streams(js)
            cfg = (await js.stream_info("LOGBOOK")).config
            assert cfg.subjects == ["legal.log.>"]
            assert cfg.max_age == pytest.approx(7 * 24 * 3600.0)
            ccfg = (await js.consumer_info("LOGBOOK", "logbook")).config
            assert ccfg.filter_subject == spec.filter_subject
            assert ccfg.ack_wait == pytest.approx(spec.ack_wait_s)

    asyncio.run(main())


def test_ensure_streams_refuses_unchangeable_drift(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server, streams=False) as bus:
            js = (await bus.connect("admin")).jetstream()
            await js.add_stream(
                StreamConfig(name="INGRESS", subjects=["ingress.>"], storage=StorageType.FILE)
            )  # limits retention, where the spec says workqueue
            with pytest.raises(ConfigurationError, match=r"INGRESS.*retention"):
                await ensure_streams(js)

    asyncio.run(main())
