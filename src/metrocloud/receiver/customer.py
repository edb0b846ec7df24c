"""A customer's receiver: holds the secret key, registers keys, pulls and checks results."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
from nats.aio.client import Client

from metrocloud.bus.subjects import DISPLAY_REQUESTS
from metrocloud.core.clock import BillingPeriod, now_iso
from metrocloud.core.messages import (
    DisplayRequest,
    KeyRegistration,
    Message,
    PeriodsRequest,
    ReadingsRequest,
    VerificationReport,
    seal,
)
from metrocloud.fhe.context import CustomerKeyPair, serialize
from metrocloud.pki import Identity, TrustStore
from metrocloud.receiver.verify import Verdict, check_result
from metrocloud.tariffs import TariffProgram

FETCH_SUBJECT, READINGS_SUBJECT, PERIODS_SUBJECT = DISPLAY_REQUESTS
KEY_PART_BYTES = 16 * 1024 * 1024  # evaluation keys per registration message


class Receiver:
    def __init__(
        self, customer_id: str, identity: Identity, keys: CustomerKeyPair, trust: TrustStore
    ) -> None:
        self.customer_id = customer_id
        self.identity = identity
        self.keys = keys
        self.trust = trust

    def registration(self, blob: bytes | None = None) -> list[bytes]:
        """The signed parts of this receiver's key registration (``blob``: the evaluation
        keys as saved when they were made; by default the ones in OpenFHE's key maps)."""
        blob = self.keys.evaluation_keys_bytes() if blob is None else blob
        digest = hashlib.sha256(blob).hexdigest()
        slices = [blob[i : i + KEY_PART_BYTES] for i in range(0, len(blob), KEY_PART_BYTES)]
        sent_at = now_iso()
        return [
            seal(
                self.identity,
                KeyRegistration(
                    customer=self.customer_id,
                    parameters=dict(self.keys.params.to_dict()),
                    key_tag=self.keys.key_tag,
                    context=serialize(self.keys.context),
                    public_key=serialize(self.keys.public_key) if n == 0 else b"",
                    evaluation_keys=piece,
                    digest=digest,
                    part=n,
                    parts=len(slices),
                    sent_at=sent_at,
                ),
            )
            for n, piece in enumerate(slices)
        ]

    def report(self, verdict: Verdict) -> bytes:
        return seal(
            self.identity,
            VerificationReport(
                customer=self.customer_id,
                meter=verdict.meter_id,
                period_id=verdict.period_id,
                verified=int(verdict.verified),
                reason=verdict.reason,
                sent_at=now_iso(),
            ),
        )

    async def register(self, nc: Client, blob: bytes | None = None) -> None:
        js = nc.jetstream(timeout=60.0)
        for part in self.registration(blob):
            await js.publish(f"ingress.keys.{self.customer_id}", part)

    async def ask(self, nc: Client, subject: str, body: Message) -> dict[str, Any] | None:
        """The display's answer to a signed request; None while it says "pending".
        ``PermissionError`` with its reason when it refuses."""
        answer = await nc.request(subject, seal(self.identity, body), timeout=30.0)
        reply = msgpack.unpackb(answer.data)
        if not isinstance(reply, dict):
            raise ValueError("the display's answer is not a map")
        if reply.get("status") == "pending":
            return None
        if reply.get("status") != "ok":
            raise PermissionError(f"display refused: {reply.get('detail')}")
        return reply

    async def fetch(self, nc: Client, meter_id: str, period: BillingPeriod) -> bytes | None:
        """The signed result, or None while it is not there yet."""
        request = DisplayRequest(self.customer_id, meter_id, period.period_id, now_iso())
        reply = await self.ask(nc, FETCH_SUBJECT, request)
        return None if reply is None else bytes(reply["result"])

    async def fetch_transmission(
        self, nc: Client, meter_id: str, period: BillingPeriod, seq: int
    ) -> bytes | None:
        """Transmission ``seq`` of a period as the gateway signed it, or None if missing."""
        request = ReadingsRequest(self.customer_id, meter_id, period.period_id, seq, now_iso())
        reply = await self.ask(nc, READINGS_SUBJECT, request)
        return None if reply is None else bytes(reply["result"])

    async def fetch_periods(self, nc: Client, meter_id: str) -> list[BillingPeriod]:
        """The billing periods of ``meter_id`` that have a result, oldest first."""
        reply = await self.ask(
            nc, PERIODS_SUBJECT, PeriodsRequest(self.customer_id, meter_id, now_iso())
        )
        periods = [BillingPeriod.from_id(str(p)) for p in (reply or {}).get("periods", [])]
        return sorted(periods, key=lambda p: (p.start, p.end))

    def check(
        self, result: bytes, meter_id: str, period: BillingPeriod, contract: TariffProgram
    ) -> Verdict:
        return check_result(
            result, self.keys, self.trust, meter_id=meter_id, period=period, contract=contract
        )

    async def send_report(self, nc: Client, verdict: Verdict) -> None:
        await nc.jetstream().publish(f"ingress.report.{self.customer_id}", self.report(verdict))
