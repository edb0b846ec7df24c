"""File storage: messages and consumer state survive a server restart."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from bus_helpers import open_bus

from metrocloud.bus.server import EmbeddedNatsServer
from metrocloud.bus.streams import fetch, pull


def test_messages_survive_restart_on_same_data_dir(tmp_path: Path) -> None:
    async def publish(srv: EmbeddedNatsServer) -> None:
        async with open_bus(srv) as bus:
            comm = await bus.connect("communication")
            for i in (1, 2):
                await comm.jetstream().publish("legal.in.reading.m1", f"reading {i}".encode())
            legal = await bus.connect("legal")
            [first] = await fetch(await pull(legal.jetstream(), "legal"), timeout_s=2.0)
            await first.ack_sync()  # the first is done; the second is still pending

    async def consume(srv: EmbeddedNatsServer) -> None:
        async with open_bus(srv) as bus:  # ensure_streams again: a no-op on the old state
            legal = await bus.connect("legal")
            sub = await pull(legal.jetstream(), "legal")
            msgs = await fetch(sub, batch=10, timeout_s=2.0)
            assert [m.data for m in msgs] == [b"reading 2"]
            await msgs[0].ack_sync()
            assert await fetch(sub, timeout_s=0.3) == []

    first = EmbeddedNatsServer(tmp_path)
    with first:
        passwords = {r: first.credentials(r) for r in ("admin", "communication", "legal")}
        asyncio.run(publish(first))

    second = EmbeddedNatsServer(tmp_path)  # a new process and a new object, same data_dir
    with second:
        assert {r: second.credentials(r) for r in passwords} == passwords
        asyncio.run(consume(second))


def test_client_reconnects_after_restart(tmp_path: Path) -> None:
    """A restarted instance keeps its port, so connected services carry on by themselves."""
    srv = EmbeddedNatsServer(tmp_path)

    async def main() -> None:
        srv.start()
        async with open_bus(srv) as bus:
            comm = await bus.connect("communication")
            await comm.jetstream().publish("legal.in.reading.m1", b"before")
            await asyncio.to_thread(srv.stop)
            await asyncio.to_thread(srv.start)
            for _ in range(200):
                if comm.stats["reconnects"] >= 1 and comm.is_connected:
                    break
                await asyncio.sleep(0.05)
            assert comm.stats["reconnects"] == 1
            assert comm.is_connected
            await comm.jetstream().publish("legal.in.reading.m1", b"after")
            legal = await bus.connect("legal")
            msgs = await fetch(await pull(legal.jetstream(), "legal"), batch=10, timeout_s=2.0)
            assert [m.data for m in msgs] == [b"before", b"after"]

    try:
        asyncio.run(main())
    finally:
        srv.stop()


def test_messages_survive_a_killed_server(tmp_path: Path) -> None:
    async def publish(srv: EmbeddedNatsServer) -> None:
        async with open_bus(srv) as bus:
            comm = await bus.connect("communication")
            await comm.jetstream().publish("legal.keys.c1", b"key")

    async def consume(srv: EmbeddedNatsServer) -> None:
        async with open_bus(srv) as bus:
            storage = await bus.connect("storage")
            [msg] = await fetch(await pull(storage.jetstream(), "storage-keys"), timeout_s=2.0)
            assert msg.data == b"key"
            await msg.ack_sync()

    srv = EmbeddedNatsServer(tmp_path)
    try:
        srv.start()
        asyncio.run(publish(srv))
        pid = srv.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while srv.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not srv.running
        srv.start()  # cleans up after the dead process, recovers the store
        asyncio.run(consume(srv))
    finally:
        srv.stop()
