"""Egress: hands encrypted results to authenticated receivers, and only their own.

Three requests, each a signed message under the customer's receiver certificate, each
answered with a msgpack map ``{"status": "ok" | "pending" | "refused", "detail", ...}``:

- ``egress.display.fetch`` (:class:`DisplayRequest`): the signed result of a meter's period;
- ``egress.display.readings`` (:class:`ReadingsRequest`): transmission ``seq`` of that
  period as the gateway signed it, the encrypted readings a display recomputes from;
- ``egress.display.periods`` (:class:`PeriodsRequest`): the periods of a meter that have a
  result (``"periods"``: a list of period ids).

A customer gets only what is theirs: the result or transmission names the customer.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import msgpack
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from metrocloud.bus.subjects import DISPLAY_REQUESTS
from metrocloud.cloud.runtime import Service
from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.core.messages import (
    DisplayRequest,
    Envelope,
    PeriodsRequest,
    ReadingsRequest,
    TariffResult,
    Transmission,
    check_fresh,
)
from metrocloud.pki import Role, verify_signature
from metrocloud.pki.validate import subject_common_name

FETCH_SUBJECT, READINGS_SUBJECT, PERIODS_SUBJECT = DISPLAY_REQUESTS


def reply(status: str, detail: str = "", result: bytes = b"", **extra: Any) -> bytes:
    return msgpack.packb({"status": status, "detail": detail, "result": result, **extra})


class Display(Service):
    name = "display"
    role = "display"
    checks_certificates = True

    async def serve(self) -> None:
        assert self.nc is not None
        for subject in DISPLAY_REQUESTS:
            await self.nc.subscribe(subject, queue="display", cb=self.handle)
        while not self.stopping:
            await asyncio.sleep(0.5)

    async def handle(self, msg: Msg) -> None:
        self.metrics.received(msg.subject)
        answer_for = {
            FETCH_SUBJECT: self.fetch,
            READINGS_SUBJECT: self.readings,
            PERIODS_SUBJECT: self.periods,
        }[msg.subject]
        try:
            with self.metrics.step(f"display:{msg.subject.rsplit('.', 1)[-1]}"):
                answer = await answer_for(msg.data)
        except Rejected as exc:
            await self.log(
                EventKind.REJECTION, "display", {"reason": exc.reason, "detail": exc.detail}
            )
            answer = reply("refused", str(exc))
        await msg.respond(answer)

    def customer_of(self, env: Envelope) -> str:
        """The customer whose receiver certificate signed the request."""
        cert = self.trust.verify(env.certificate, expected_role=Role.RECEIVER)
        verify_signature(cert, env.body, env.signature)
        return subject_common_name(cert)

    def opened(
        self, raw: bytes, kind: type[DisplayRequest | ReadingsRequest | PeriodsRequest]
    ) -> Any:
        env = Envelope.decode(raw)
        customer = self.customer_of(env)
        req = kind.decode(env.body)
        if req.customer != customer:
            raise Rejected("customer-mismatch", f"{customer} asked as {req.customer}")
        check_fresh(req.sent_at, datetime.now(timezone.utc))
        return req

    async def stored(self, subject: str) -> bytes | None:
        assert self.js is not None
        try:
            found = await self.js.get_last_msg("EGRESS", subject, direct=True)
        except NotFoundError:
            return None
        return found.data or b""

    async def fetch(self, raw: bytes) -> bytes:
        req: DisplayRequest = self.opened(raw, DisplayRequest)
        subject = f"egress.results.{req.meter}.{req.period_id}"
        return await self.hand_out(req, subject, TariffResult, "fetch-result", "no result yet")

    async def readings(self, raw: bytes) -> bytes:
        req: ReadingsRequest = self.opened(raw, ReadingsRequest)
        subject = f"egress.readings.{req.meter}.{req.period_id}.{req.seq}"
        missing = f"no transmission {req.seq} of this period"
        return await self.hand_out(req, subject, Transmission, "fetch-readings", missing)

    async def hand_out(
        self,
        req: DisplayRequest | ReadingsRequest,
        subject: str,
        kind: type[TariffResult | Transmission],
        action: str,
        missing: str,
    ) -> bytes:
        """What is stored under ``subject``, if it names the requesting customer."""
        data = await self.stored(subject)
        if data is None:
            return reply("pending", missing)
        if kind.decode(Envelope.decode(data).body).customer != req.customer:
            raise Rejected("not-your-meter", f"{req.customer} may not read {req.meter}")
        await self.log(
            EventKind.USER_ACTIVITY,
            req.customer,
            {"action": action, "meter": req.meter, "period": req.period_id},
        )
        return reply("ok", result=data)

    async def periods(self, raw: bytes) -> bytes:
        req: PeriodsRequest = self.opened(raw, PeriodsRequest)
        assert self.js is not None
        prefix = f"egress.results.{req.meter}."
        info = await self.js.stream_info("EGRESS", subjects_filter=prefix + "*")
        subjects = sorted((info.state.subjects or {}) if info.state else {})
        periods = [s[len(prefix) :] for s in subjects]
        if periods:  # a period's result names its customer: the latest tells whose meter it is
            data = await self.stored(subjects[-1])
            result = TariffResult.decode(Envelope.decode(data or b"").body)
            if result.customer != req.customer:
                raise Rejected("not-your-meter", f"{req.customer} may not read {req.meter}")
        return reply("ok", periods=periods)
