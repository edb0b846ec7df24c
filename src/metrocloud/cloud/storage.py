"""Long-term storage of the signed encrypted readings, key registrations and results.

Results are exported to the egress zone (``egress.results.<meter>.<period>``) once stored,
and so are the gateway's signed encrypted readings (``egress.readings.<meter>.<period>.<seq>``),
from which a customer's display recomputes its bill; third-party services get a notice
without any reading in it.

Each message is stored, then its storage is logged. When the log fails (the logbook's
stream is electing a leader, say) the message comes again and finds itself stored: the
event is logged then (with the same event id, so at most once), never skipped.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.msg import Msg

from metrocloud.cloud.runtime import Service, delivered_before
from metrocloud.core.events import EventKind
from metrocloud.core.messages import Envelope, KeyRegistration, TariffResult, Transmission
from metrocloud.pki import Role, verify_signature


class Storage(Service):
    name = "storage"
    role = "storage"
    checks_certificates = True

    async def serve(self) -> None:
        await asyncio.gather(
            self.consume("storage-readings", self.reading),
            self.consume("storage-keys", self.keys),
            self.consume("storage-results", self.result),
        )

    async def reading(self, msg: Msg) -> None:
        tx = Transmission.decode(Envelope.decode(msg.data).body)
        new = self.store.insert_reading(tx.meter, tx.period_id, tx.seq, tx.first_index, msg.data)
        if new or delivered_before(msg):  # a redelivery: its event may not be logged yet
            await self.publish(
                f"egress.readings.{tx.meter}.{tx.period_id}.{tx.seq}",
                msg.data,
                f"egress-reading-{tx.meter}-{tx.first_index}",
            )
            await self.log(
                EventKind.STORAGE,
                tx.meter,
                {"what": "transmission", "period": tx.period_id, "seq": tx.seq},
                event_id=f"stored-reading-{tx.meter}-{tx.first_index}",
            )
        await msg.ack()

    async def keys(self, msg: Msg) -> None:
        reg = KeyRegistration.decode(Envelope.decode(msg.data).body)
        new = self.store.insert_key_registration(reg.customer, reg.key_tag, reg.part, msg.data)
        if new or delivered_before(msg):
            await self.log(
                EventKind.STORAGE,
                reg.customer,
                {"what": "key-registration", "key_tag": reg.key_tag, "part": reg.part},
                event_id=f"stored-keys-{reg.customer}-{reg.key_tag}-{reg.part}",
            )
        await msg.ack()

    async def result(self, msg: Msg) -> None:
        env = Envelope.decode(msg.data)
        cert = self.trust.verify(env.certificate, expected_role=Role.SERVICE)
        verify_signature(cert, env.body, env.signature)
        res = TariffResult.decode(env.body)
        self.store.insert_result(res.meter, res.period_id, msg.data)
        stored = self.store.result(res.meter, res.period_id)
        assert stored is not None
        await self.publish(
            f"egress.results.{res.meter}.{res.period_id}",
            stored,
            f"egress-{res.meter}-{res.period_id}",
        )
        assert self.nc is not None
        await self.nc.publish(
            f"services.export.result.{res.meter}",
            json.dumps({"meter": res.meter, "period": res.period_id}).encode(),
        )
        await self.log(
            EventKind.STORAGE,
            res.meter,
            {"what": "result", "period": res.period_id, "tariff": res.tariff},
            event_id=f"stored-result-{res.meter}-{res.period_id}",
        )
        await msg.ack()
