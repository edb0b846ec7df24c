"""fetch: a batch of what is ready, without waiting for the batch to fill."""

from __future__ import annotations

import asyncio
import time

from bus_helpers import open_bus

from metrocloud.bus.server import EmbeddedNatsServer
from metrocloud.bus.streams import fetch, pull


def test_a_message_into_an_idle_consumer_is_fetched_at_once(server: EmbeddedNatsServer) -> None:
    """The fetch was waiting when the message came: it returns with it, not when its
    timeout would have let a batch of 256 fill up."""

    async def main() -> None:
        async with open_bus(server) as bus:
            comm = await bus.connect("communication")
            sub = await pull((await bus.connect("logbook")).jetstream(), "logbook")
            waiting = asyncio.create_task(fetch(sub, batch=256, timeout_s=5.0))
            await asyncio.sleep(0.3)  # the fetch is now a lingering pull request
            published = time.monotonic()
            await comm.jetstream().publish("legal.log.communication", b"event 1")
            msgs = await waiting
            took = time.monotonic() - published
            assert [m.data for m in msgs] == [b"event 1"]
            assert took < 2.0, f"returned {took:.2f} s after the message came"
            await msgs[0].ack_sync()

    asyncio.run(main())


def test_ready_messages_come_in_one_batch_in_order(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server) as bus:
            comm = await bus.connect("communication")
            for i in range(12):
                await comm.jetstream().publish("legal.log.communication", f"event {i}".encode())
            sub = await pull((await bus.connect("logbook")).jetstream(), "logbook")
            first = await fetch(sub, batch=8, timeout_s=2.0)
            assert [m.data for m in first] == [f"event {i}".encode() for i in range(8)]
            rest = await fetch(sub, batch=8, timeout_s=2.0)
            assert [m.data for m in rest] == [f"event {i}".encode() for i in range(8, 12)]
            for m in first + rest:
                await m.ack_sync()
            assert await fetch(sub, batch=8, timeout_s=0.3) == []

    asyncio.run(main())
