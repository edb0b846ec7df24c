"""Zone separation enforced by the broker with exactly the permissions of subjects.py.

The checks are functions of a :class:`BusTarget` so that the same matrix runs against a
single server (here) and against the nodes of a cluster (``test_bus_cluster.py``). They
leave every consumer as they found it and compare stream contents before and after, so
they can share one long-lived server.
"""

from __future__ import annotations

import asyncio

import pytest
from bus_helpers import BusTarget, arrived, collect, fetch_count, settle
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from metrocloud.bus.server import EmbeddedNatsServer
from metrocloud.bus.streams import fetch, pull

STREAM_NAMES = ("INGRESS", "LEGAL", "LOGBOOK", "EGRESS")
JS_TIMEOUT_S = 20.0
"""JetStream requests may wait for a replicated stream's leader on a loaded machine; what is
under test is who may publish, not how fast."""


async def check_zone_flow(target: BusTarget) -> None:
    """One message through every zone, each hop with only its role's permissions."""
    async with target.open() as bus:
        admin_js = bus.clients[0].jetstream(timeout=JS_TIMEOUT_S)
        ingress_seq = (await admin_js.stream_info("INGRESS")).state.last_seq
        gateway = await bus.connect("gateway")
        receiver = await bus.connect("receiver")
        communication = await bus.connect("communication")
        legal = await bus.connect("legal")
        storage = await bus.connect("storage")
        logbook = await bus.connect("logbook")
        display = await bus.connect("display")

        # field -> ingress
        gjs = gateway.jetstream(timeout=JS_TIMEOUT_S)
        ack = await gjs.publish("ingress.upload.gw1", b"transmission")
        assert (ack.stream, ack.seq) == ("INGRESS", ingress_seq + 1)
        rjs = receiver.jetstream(timeout=JS_TIMEOUT_S)
        ack = await rjs.publish("ingress.keys.c1", b"key registration")
        assert ack.stream == "INGRESS"

        # ingress: communication pulls both, acks, forwards into the legal zone
        cjs = communication.jetstream(timeout=JS_TIMEOUT_S)
        sub = await pull(cjs, "communication")
        msgs = await fetch_count(sub, 2)
        assert sorted(m.subject for m in msgs) == ["ingress.keys.c1", "ingress.upload.gw1"]
        for m in msgs:
            await m.ack_sync()
        assert (await cjs.publish("legal.in.reading.m1", b"reading")).stream == "LEGAL"
        assert (await cjs.publish("legal.keys.c1", b"key")).stream == "LEGAL"
        assert (await cjs.publish("legal.log.communication", b"log")).stream == "LOGBOOK"
        # the work queue is empty once acknowledged
        assert (await admin_js.stream_info("INGRESS")).state.messages == 0

        # legal zone: the legal service
        ljs = legal.jetstream(timeout=JS_TIMEOUT_S)
        [m] = await fetch(await pull(ljs, "legal"), timeout_s=2.0)
        assert (m.subject, m.data) == ("legal.in.reading.m1", b"reading")
        await m.ack_sync()
        assert (await ljs.publish("legal.results.m1", b"r")).stream == "LEGAL"
        assert (await ljs.publish("legal.log.legal", b"log")).stream == "LOGBOOK"

        # legal zone: storage reads readings, keys and results, publishes to egress
        sjs = storage.jetstream(timeout=JS_TIMEOUT_S)
        for durable, subject in [
            ("storage-readings", "legal.in.reading.m1"),
            ("storage-keys", "legal.keys.c1"),
            ("storage-results", "legal.results.m1"),
        ]:
            [m] = await fetch(await pull(sjs, durable), timeout_s=2.0)
            assert m.subject == subject
            await m.ack_sync()
        assert (await sjs.publish("egress.results.m1.p1", b"results")).stream == "EGRESS"
        assert (await sjs.publish("legal.log.storage", b"log")).stream == "LOGBOOK"

        # egress: display reads the results directly and logs
        djs = display.jetstream(timeout=JS_TIMEOUT_S)
        got = await djs.get_last_msg("EGRESS", "egress.results.m1.p1", direct=True)
        assert got.data == b"results"
        assert (await djs.publish("legal.log.display", b"log")).stream == "LOGBOOK"

        # display answers receivers' requests (allow_responses)
        async def answer(msg: Msg) -> None:
            await msg.respond(b"answer to " + msg.data)

        await display.subscribe("egress.display.fetch", cb=answer)
        await display.flush()
        await target.await_interest("egress.display.fetch")
        reply = await request_answered(receiver, "egress.display.fetch", b"m1.p1")
        assert reply.data == b"answer to m1.p1"

        # logbook pulls every service's log entries
        lsub = await pull(logbook.jetstream(timeout=JS_TIMEOUT_S), "logbook")
        entries = await fetch_count(lsub, 4)
        entries += await fetch(lsub, batch=10, timeout_s=0.3)  # and nothing more
        assert sorted(m.subject for m in entries) == [
            "legal.log.communication",
            "legal.log.display",
            "legal.log.legal",
            "legal.log.storage",
        ]
        for m in entries:
            await m.ack_sync()

        # every acknowledgement reached the server
        for stream, durable in [
            ("LEGAL", "legal"),
            ("LEGAL", "storage-readings"),
            ("LEGAL", "storage-keys"),
            ("LEGAL", "storage-results"),
            ("LOGBOOK", "logbook"),
        ]:
            info = await admin_js.consumer_info(stream, durable)
            assert (info.num_ack_pending, info.num_pending) == (0, 0), durable
        await settle(*bus.clients)
        assert bus.violations() == {}


async def request_answered(nc: NATS, subject: str, payload: bytes) -> Msg:
    """Request, retrying for up to 5 s while the broker reports no responders.

    The responder subscribed and flushed, yet a loaded CI machine once answered
    "no responders" to the very next request from another connection; only
    the permission to answer is under test here, not that timing.
    """
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        try:
            return await nc.request(subject, payload, timeout=2.0)
        except NoRespondersError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_each_service_publishes_its_subjects_and_pulls_its_consumer(
    server: EmbeddedNatsServer,
) -> None:
    asyncio.run(check_zone_flow(BusTarget(server)))


# (role, subject): publishes the broker must refuse.
REFUSED_PUBLISH = [
    ("thirdparty", "legal.in.reading.x"),
    ("thirdparty", "ingress.upload.gw1"),
    ("thirdparty", "$JS.API.STREAM.INFO.LEGAL"),
    ("gateway", "legal.results.x"),
    ("gateway", "ingress.keys.c1"),
    ("receiver", "ingress.upload.gw1"),
    ("communication", "legal.results.m1"),
    ("communication", "legal.log.legal"),
    ("communication", "$JS.API.CONSUMER.MSG.NEXT.LEGAL.legal"),
    ("legal", "legal.in.reading.m1"),
    ("legal", "egress.results.m1.p1"),
    ("storage", "legal.results.m1"),
    ("logbook", "legal.log.logbook"),
    ("display", "egress.results.m1.p1"),
    ("display", "$JS.API.STREAM.MSG.GET.LEGAL"),
]


async def check_refused_publish(target: BusTarget, role: str, subject: str) -> None:
    async with target.open() as bus:
        admin = bus.clients[0]
        js = admin.jetstream()
        before = {s: (await js.stream_info(s)).state.last_seq for s in STREAM_NAMES}
        watched = subject.split(".")[0] + ".>"  # e.g. legal.>
        seen = await collect(admin, watched)
        await target.await_interest(watched)
        nc = await bus.connect(role)
        await nc.publish(subject, b"forged", reply=nc.new_inbox())
        violation = await bus.errors[role].wait_for_violation(subject)
        assert violation.startswith("nats: permissions violation for publish")
        await settle(nc, admin)
        assert seen == []
        assert {s: (await js.stream_info(s)).state.last_seq for s in STREAM_NAMES} == before
        assert nc.is_connected  # a violation is reported, not fatal


@pytest.mark.parametrize(("role", "subject"), REFUSED_PUBLISH)
def test_broker_refuses_publish(server: EmbeddedNatsServer, role: str, subject: str) -> None:
    asyncio.run(check_refused_publish(BusTarget(server), role, subject))


# (role, subject): subscriptions the broker must refuse.
REFUSED_SUBSCRIBE = [
    ("thirdparty", "legal.>"),
    ("thirdparty", ">"),
    ("thirdparty", "_INBOX_communication.>"),
    ("gateway", "ingress.upload.>"),
    ("communication", "legal.in.>"),
    ("legal", "_INBOX_storage.>"),
    ("display", "egress.results.>"),
]


async def check_refused_subscribe(target: BusTarget, role: str, subject: str) -> None:
    async with target.open() as bus:
        nc = await bus.connect(role)
        seen = await collect(nc, subject)
        violation = await bus.errors[role].wait_for_violation(subject)
        assert violation.startswith("nats: permissions violation for subscription")
        admin = bus.clients[0]
        probe = subject.replace(">", "probe")
        await admin.publish(probe, b"secret")
        await settle(admin, nc)
        assert seen == []


@pytest.mark.parametrize(("role", "subject"), REFUSED_SUBSCRIBE)
def test_broker_refuses_subscribe(server: EmbeddedNatsServer, role: str, subject: str) -> None:
    asyncio.run(check_refused_subscribe(BusTarget(server), role, subject))


async def check_thirdparty_stays_in_services(target: BusTarget) -> None:
    async with target.open() as bus:
        tp = await bus.connect("thirdparty")
        storage = await bus.connect("storage")
        seen = await collect(tp, "services.>")
        await target.await_interest("services.>")
        await storage.publish("services.export.m1", b"export")
        await tp.publish("services.addon.x", b"own")
        await arrived(seen, 2)
        await settle(storage, tp)  # and nothing more
        assert sorted(m.subject for m in seen) == ["services.addon.x", "services.export.m1"]
        assert bus.violations() == {}


def test_thirdparty_stays_in_services(server: EmbeddedNatsServer) -> None:
    asyncio.run(check_thirdparty_stays_in_services(BusTarget(server)))


async def check_cannot_pull_another_services_consumer(target: BusTarget) -> None:
    async with target.open() as bus:
        admin_js = bus.clients[0].jetstream()
        pending = (await admin_js.consumer_info("LEGAL", "storage-keys")).num_pending
        comm = await bus.connect("communication")
        await comm.jetstream().publish("legal.keys.c1", b"key")
        legal = await bus.connect("legal")
        sub = await pull(legal.jetstream(), "storage-keys")
        assert await fetch(sub, timeout_s=0.5) == []
        await bus.errors["legal"].wait_for_violation("MSG.NEXT.LEGAL.storage-keys")
        info = await admin_js.consumer_info("LEGAL", "storage-keys")
        assert info.num_pending == pending + 1  # still there for storage
        storage = await bus.connect("storage")
        msgs = await fetch(await pull(storage.jetstream(), "storage-keys"), 10, timeout_s=2.0)
        assert [m.data for m in msgs][-1:] == [b"key"]
        for m in msgs:
            await m.ack_sync()


def test_service_cannot_pull_another_services_consumer(server: EmbeddedNatsServer) -> None:
    asyncio.run(check_cannot_pull_another_services_consumer(BusTarget(server)))
