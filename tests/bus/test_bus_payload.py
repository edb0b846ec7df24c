"""Large messages (FHE ciphertexts): max_payload raised, and still enforced."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from bus_helpers import open_bus
from nats.errors import MaxPayloadError

from metrocloud.bus.server import EmbeddedNatsServer
from metrocloud.bus.streams import fetch, pull

MiB = 1024 * 1024


def test_two_mib_message_passes_through_jetstream(server: EmbeddedNatsServer) -> None:
    payload = os.urandom(2 * MiB)

    async def main() -> None:
        async with open_bus(server) as bus:
            comm = await bus.connect("communication")
            ack = await comm.jetstream().publish("legal.in.reading.m1", payload)
            assert ack.stream == "LEGAL"
            legal = await bus.connect("legal")
            [msg] = await fetch(await pull(legal.jetstream(), "legal"), timeout_s=5.0)
            assert msg.data == payload
            await msg.ack_sync()
            assert bus.violations() == {}

    asyncio.run(main())


def test_message_above_max_payload_is_refused(server: EmbeddedNatsServer) -> None:
    async def main() -> None:
        async with open_bus(server) as bus:
            comm = await bus.connect("communication")
            assert comm.max_payload == server.max_payload == 8 * MiB
            with pytest.raises(MaxPayloadError):
                await comm.jetstream().publish("legal.in.reading.m1", b"x" * (8 * MiB + 1))
            js = bus.clients[0].jetstream()
            assert (await js.stream_info("LEGAL")).state.messages == 0

    asyncio.run(main())


def test_max_payload_is_configurable(tmp_path: Path) -> None:
    async def main(srv: EmbeddedNatsServer) -> None:
        async with open_bus(srv) as bus:
            comm = await bus.connect("communication")
            assert comm.max_payload == 1 * MiB
            await comm.jetstream().publish("legal.in.reading.m1", b"x" * (MiB - 1024))
            with pytest.raises(MaxPayloadError):
                await comm.jetstream().publish("legal.in.reading.m1", b"x" * (MiB + 1))

    with EmbeddedNatsServer(tmp_path, max_payload=1 * MiB) as srv:
        asyncio.run(main(srv))
