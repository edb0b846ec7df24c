"""The logbook service: appends every event of the LOGBOOK stream to the Merkle-tree log."""

from __future__ import annotations

from metrocloud.bus.streams import fetch, pull
from metrocloud.cloud.runtime import Service
from metrocloud.core.events import LogEvent
from metrocloud.logbook.transparency import MerkleLogbook


class Logbook(Service):
    name = "logbook"
    role = "logbook"

    async def serve(self) -> None:
        book = MerkleLogbook(self.data.logbook)
        assert self.js is not None
        sub = await pull(self.js, "logbook")
        try:
            while not self.stopping:
                msgs = await fetch(sub, batch=256, timeout_s=1.0)
                if not msgs:
                    continue
                book.append_many([LogEvent.from_json(m.data) for m in msgs])
                for m in msgs:
                    await m.ack()
        finally:
            book.close()

    async def log(self, *args: object, **kwargs: object) -> None:
        """The logbook does not log into itself through the bus."""
