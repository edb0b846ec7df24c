"""Zone separation enforced by the broker with exactly the permissions of subjects.py."""

from __future__ import annotations

import asyncio

import pytest
from bus_helpers import arrived, collect, open_bus, settle
from nats.aio.msg import Msg

from metrocloud.bus.server import EmbeddedNatsServer
from metrocloud.bus.streams import fetch, pull


def test_each_service_publishes_its_subjects_and_pulls_its_consumer(
    server: EmbeddedNatsServer,
) -> None:
    """One message through every zone, each hop with only its role's permissions."""

    async def main() -> None:
        async with open_bus(server) as bus:
            admin_js = bus.clients[0].jetstream()
            gateway = await bus.connect("gateway")
            receiver = await bus.connect("receiver")
            communication = await bus.connect("communication")
            legal = await bus.connect("legal")
            storage = await bus.connect("storage")
            logbook = await bus.connect("logbook")
            display = await bus.connect("display")

            # field -> ingress
            ack = await gateway.jetstream().publish("ingress.upload.gw1", b"transmission")
            assert (ack.stream, ack.seq) == ("INGRESS", 1)
            ack = await receiver.jetstream().publish("ingress.keys.c1", b"key registration")
            assert ack.stream == "INGRESS"

            # ingress: communication pulls both, acks, forwards into the legal zone
            cjs = communication.jetstream()
            sub = await pull(cjs, "communication")
            msgs = await fetch(sub, batch=2, timeout_s=2.0)
            assert sorted(m.subject for m in msgs) == ["ingress.keys.c1", "ingress.upload.gw1"]
            for m in msgs:
                await m.ack_sync()
            assert (await cjs.publish("legal.in.reading.m1", b"reading")).stream == "LEGAL"
            assert (await cjs.publish("legal.keys.c1", b"key")).stream == "LEGAL"
            assert (await cjs.publish("legal.log.communication", b"log")).stream == "LOGBOOK"
            # the work queue is empty once acknowledged
            assert (await admin_js.stream_info("INGRESS")).state.messages == 0

            # legal zone: the legal service
            ljs = legal.jetstream()
            [m] = await fetch(await pull(ljs, "legal"), timeout_s=2.0)
            assert (m.subject, m.data) == ("legal.in.reading.m1", b"reading")
            await m.ack_sync()
            assert (await ljs.publish("legal.results.m1", b"r")).stream == "LEGAL"
            assert (await ljs.publish("legal.log.legal", b"log")).stream == "LOGBOOK"

            # legal zone: storage reads readings, keys and results, publishes to egress
            sjs = storage.jetstream()
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
            djs = display.jetstream()
            got = await djs.get_last_msg("EGRESS", "egress.results.m1.p1", direct=True)
            assert got.data == b"results"
            assert (await djs.publish("legal.log.display", b"log")).stream == "LOGBOOK"

            # display answers receivers' requests (allow_responses)
            async def answer(msg: Msg) -> None:
                await msg.respond(b"answer to " + msg.data)

            await display.subscribe("egress.display.fetch", cb=answer)
            await display.flush()
            reply = await receiver.request("egress.display.fetch", b"m1.p1", timeout=2.0)
            assert reply.data == b"answer to m1.p1"

            # logbook pulls every service's log entries
            lsub = await pull(logbook.jetstream(), "logbook")
            entries = await fetch(lsub, batch=10, timeout_s=2.0)
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

    asyncio.run(main())


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


@pytest.mark.parametrize(("role", "subject"), REFUSED_PUBLISH)
def test_broker_refuses_publish(server: EmbeddedNatsServer, role: str, subject: str) -> None:
    async def main() -> None:
        async with open_bus(server) as bus:
            admin = bus.clients[0]
            seen = await collect(admin, subject.split(".")[0] + ".>")  # e.g. legal.>
            nc = await bus.connect(role)
            await nc.publish(subject, b"forged", reply=nc.new_inbox())
            violation = await bus.errors[role].wait_for_violation(subject)
            assert violation.startswith("nats: permissions violation for publish")
            await settle(nc, admin)
            assert seen == []
            js = admin.jetstream()
            for stream in ("INGRESS", "LEGAL", "LOGBOOK", "EGRESS"):
                assert (await js.stream_info(stream)).state.messages == 0
            assert nc.is_connected  # a violation is reported, not fatal

    asyncio.run(main())


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


@pytest.mark.parametrize(("role", "subject"), REFUSED_SUBSCRIBE)
def test_broker_refuses_subscribe(server: EmbeddedNatsServer, role: str, subject: str) -> None:
    async def main() -> None:
        async with open_bus(server) as bus:
            nc = await bus.connect(role)
            seen = await collect(nc, subject)
            violation = await bus.errors[role].wait_for_violation(subject)
            assert violation.startswith("nats: permissions violation for subscription")
            admin = bus.clients[0]
            probe = subject.replace(">", "probe")
            await admin.publish(probe, b"secret")
            await settle(admin, nc)
            assert seen == []

    asyncio.run(main())


def test_thirdparty_stays_in_services(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server) as bus:
            tp = await bus.connect("thirdparty")
            storage = await bus.connect("storage")
            seen = await collect(tp, "services.>")
            await storage.publish("services.export.m1", b"export")
            await tp.publish("services.addon.x", b"own")
            await arrived(seen, 2)
            await settle(storage, tp)  # and nothing more
            assert sorted(m.subject for m in seen) == ["services.addon.x", "services.export.m1"]
            assert bus.violations() == {}

    asyncio.run(main())


def test_service_cannot_pull_another_services_consumer(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server) as bus:
            comm = await bus.connect("communication")
            await comm.jetstream().publish("legal.keys.c1", b"key")
            legal = await bus.connect("legal")
            sub = await pull(legal.jetstream(), "storage-keys")
            assert await fetch(sub, timeout_s=0.5) == []
            await bus.errors["legal"].wait_for_violation("MSG.NEXT.LEGAL.storage-keys")
            info = await bus.clients[0].jetstream().consumer_info("LEGAL", "storage-keys")
            assert info.num_pending == 1  # still there for storage

    asyncio.run(main())
