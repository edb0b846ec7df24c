"""A customer's receiver: holds the secret key, registers keys, pulls and checks results."""

from __future__ import annotations

import hashlib

import msgpack
from nats.aio.client import Client

from metrocloud.core.clock import BillingPeriod, now_iso
from metrocloud.core.messages import DisplayRequest, KeyRegistration, VerificationReport, seal
from metrocloud.fhe.context import CustomerKeyPair, serialize
from metrocloud.pki import Identity, TrustStore
from metrocloud.receiver.verify import Verdict, check_result
from metrocloud.tariffs import TariffProgram

FETCH_SUBJECT = "egress.display.fetch"
KEY_PART_BYTES = 16 * 1024 * 1024  # evaluation keys per registration message


class Receiver:
    def __init__(
        self, customer_id: str, identity: Identity, keys: CustomerKeyPair, trust: TrustStore
    ) -> None:
        self.customer_id = customer_id
        self.identity = identity
        self.keys = keys
        self.trust = trust

    def registration(self) -> list[bytes]:
        """The signed parts of this receiver's key registration."""
        blob = self.keys.evaluation_keys_bytes()
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

    def display_request(self, meter_id: str, period: BillingPeriod) -> bytes:
        return seal(
            self.identity,
            DisplayRequest(
                customer=self.customer_id,
                meter=meter_id,
                period_id=period.period_id,
                sent_at=now_iso(),
            ),
        )

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

    async def register(self, nc: Client) -> None:
        js = nc.jetstream(timeout=60.0)
        for part in self.registration():
            await js.publish(f"ingress.keys.{self.customer_id}", part)

    async def fetch(self, nc: Client, meter_id: str, period: BillingPeriod) -> bytes | None:
        """The signed result, or None while it is not there yet."""
        answer = await nc.request(
            FETCH_SUBJECT, self.display_request(meter_id, period), timeout=30.0
        )
        reply = msgpack.unpackb(answer.data)
        if reply["status"] == "pending":
            return None
        if reply["status"] != "ok":
            raise PermissionError(f"display refused: {reply['detail']}")
        result = reply["result"]
        assert isinstance(result, bytes)
        return result

    def check(
        self, result: bytes, meter_id: str, period: BillingPeriod, contract: TariffProgram
    ) -> Verdict:
        return check_result(
            result, self.keys, self.trust, meter_id=meter_id, period=period, contract=contract
        )

    async def send_report(self, nc: Client, verdict: Verdict) -> None:
        await nc.jetstream().publish(f"ingress.report.{self.customer_id}", self.report(verdict))
