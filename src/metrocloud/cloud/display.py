"""Egress: hands encrypted results to authenticated receivers, and only their own."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import msgpack
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from metrocloud.cloud.runtime import Service
from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.core.messages import DisplayRequest, Envelope, TariffResult, check_fresh
from metrocloud.pki import Role, verify_signature
from metrocloud.pki.validate import subject_common_name

FETCH_SUBJECT = "egress.display.fetch"


def reply(status: str, detail: str = "", result: bytes = b"") -> bytes:
    return msgpack.packb({"status": status, "detail": detail, "result": result})


class Display(Service):
    name = "display"
    role = "display"
    checks_certificates = True

    async def serve(self) -> None:
        assert self.nc is not None
        await self.nc.subscribe(FETCH_SUBJECT, queue="display", cb=self.handle)
        while not self.stopping:
            await asyncio.sleep(0.5)

    async def handle(self, msg: Msg) -> None:
        self.metrics.received(msg.subject)
        try:
            with self.metrics.step("display:fetch"):
                answer = await self.fetch(msg.data)
        except Rejected as exc:
            await self.log(
                EventKind.REJECTION, "display", {"reason": exc.reason, "detail": exc.detail}
            )
            answer = reply("refused", str(exc))
        await msg.respond(answer)

    async def fetch(self, raw: bytes) -> bytes:
        env = Envelope.decode(raw)
        cert = self.trust.verify(env.certificate, expected_role=Role.RECEIVER)
        verify_signature(cert, env.body, env.signature)
        req = DisplayRequest.decode(env.body)
        customer = subject_common_name(cert)
        if req.customer != customer:
            raise Rejected("customer-mismatch", f"{customer} asked as {req.customer}")
        check_fresh(req.sent_at, datetime.now(timezone.utc))
        assert self.js is not None
        try:
            stored = await self.js.get_last_msg(
                "EGRESS", f"egress.results.{req.meter}.{req.period_id}", direct=True
            )
        except NotFoundError:
            return reply("pending", "no result yet")
        data = stored.data or b""
        result = TariffResult.decode(Envelope.decode(data).body)
        if result.customer != customer:
            raise Rejected("not-your-meter", f"{customer} may not read {req.meter}")
        await self.log(
            EventKind.USER_ACTIVITY,
            customer,
            {"action": "fetch-result", "meter": req.meter, "period": req.period_id},
        )
        return reply("ok", result=data)
