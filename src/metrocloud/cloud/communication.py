"""Ingress: the only door from the Internet into the cloud.

Checks, in order, every upload: size, envelope, certificate chain and role, signature,
known gateway and meter, body, freshness, the customer's registered crypto context and key,
the two distinct ciphertexts of the integrity protocol, and replay of reading indices. What
passes goes to the legal zone; what fails is dropped with a reason in the logbook.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from nats.aio.msg import Msg

from metrocloud.cloud.runtime import Service, delivered_before
from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.core.messages import (
    Envelope,
    KeyRegistration,
    PeriodClose,
    Transmission,
    VerificationReport,
    check_fresh,
)
from metrocloud.fhe.inspect import Inspector
from metrocloud.fhe.params import FheParameters
from metrocloud.pki import Role, verify_signature
from metrocloud.pki.validate import subject_common_name
from metrocloud.store import CustomerKeyRecord, Flag

# A month of a comparison tariff is a few dozen MB; the broker's limit is 32 MiB.
MAX_UPLOAD_BYTES = 30 * 1024 * 1024
MAX_REGISTRATION_BYTES = 30 * 1024 * 1024
MAX_CIPHERTEXTS = 16
MAX_KEY_PARTS = 64
# A message that depends on one not yet seen (an upload before its customer's key
# registration, which a crash may have put back in the queue) waits this long.
DEFER_ATTEMPTS = 15
DEFER_DELAY_S = 2.0


class Deferred(Rejected):
    """Refused for now; refused for good after ``DEFER_ATTEMPTS`` deliveries."""


class Communication(Service):
    name = "communication"
    role = "communication"
    checks_certificates = True

    async def serve(self) -> None:
        self.inspector = Inspector()
        await self.inspector.start()
        try:
            await self.consume("communication", self.handle)
        finally:
            self.inspector.close()

    async def handle(self, msg: Msg) -> None:
        kind = msg.subject.split(".")[1]
        sender = msg.subject.split(".", 2)[2] if msg.subject.count(".") >= 2 else "?"
        try:
            if kind == "upload":
                await self.upload(msg)
            elif kind == "keys":
                await self.registration(msg)
            elif kind == "report":
                await self.report(msg)
            else:
                raise Rejected("unknown-subject", msg.subject)
        except Deferred as exc:
            if msg.metadata.num_delivered < DEFER_ATTEMPTS:
                await msg.nak(delay=DEFER_DELAY_S)
                return
            await self.reject(msg, sender, exc)
        except Rejected as exc:
            await self.reject(msg, sender, exc)
        await msg.ack()

    async def reject(self, msg: Msg, sender: str, exc: Rejected) -> None:
        await self.log(
            EventKind.REJECTION,
            sender,
            {
                "reason": exc.reason,
                "detail": exc.detail,
                "subject": msg.subject,
                "bytes": len(msg.data),
            },
            event_id=f"reject-{msg.metadata.sequence.stream}",
        )

    # -- shared checks ------------------------------------------------------------------
    def open_envelope(self, raw: bytes, limit: int, role: Role) -> tuple[Envelope, str]:
        if len(raw) > limit:
            raise Rejected("oversized-message", f"{len(raw)} bytes, limit {limit}")
        env = Envelope.decode(raw)
        cert = self.trust.verify(env.certificate, expected_role=role)
        verify_signature(cert, env.body, env.signature)
        return env, subject_common_name(cert)

    # -- uploads from gateways ------------------------------------------------------------
    async def upload(self, msg: Msg) -> None:
        env, gateway = self.open_envelope(msg.data, MAX_UPLOAD_BYTES, Role.GATEWAY)
        if not self.store.gateway_known(gateway):
            raise Rejected("unknown-gateway", f"gateway {gateway} is not registered")
        now = datetime.now(timezone.utc)
        kind = env.body_kind()
        if kind == Transmission.kind:
            await self.transmission(msg, env, gateway, now)
        elif kind == PeriodClose.kind:
            close = PeriodClose.decode(env.body)
            self.check_meter(gateway, close.gateway, close.meter, close.customer)
            check_fresh(close.sent_at, now)
            key = f"close:{close.period_id}"
            self.check_replay(msg, env, close.meter, key, f"period {close.period_id} closing")
            await self.publish(
                f"legal.in.close.{close.meter}",
                msg.data,
                f"close-{close.meter}-{close.period_id}",
            )
            self.store.accept(close.meter, key, hashlib.sha256(env.body).digest())
            await self.log(
                EventKind.ARRIVAL,
                close.meter,
                {"what": "period-close", "period": close.period_id, "gateway": gateway},
                event_id=f"arrival-close-{close.meter}-{close.period_id}",
            )
        else:
            raise Rejected("malformed-message", f"gateways do not send {kind}")

    def check_meter(self, gateway: str, claimed: str, meter_id: str, customer: str) -> None:
        if claimed != gateway:
            raise Rejected("gateway-mismatch", f"signed by {gateway}, body claims {claimed}")
        meter = self.store.meter(meter_id)
        if meter is None or meter.gateway_id != gateway:
            raise Rejected("unknown-meter", f"meter {meter_id} is not registered to {gateway}")
        if meter.customer_id != customer:
            raise Rejected("unknown-meter", f"meter {meter_id} does not belong to {customer}")

    async def transmission(self, msg: Msg, env: Envelope, gateway: str, now: datetime) -> None:
        tx = Transmission.decode(env.body)
        self.check_meter(gateway, tx.gateway, tx.meter, tx.customer)
        check_fresh(tx.sent_at, now)
        if not (tx.period_start <= tx.first_index and tx.first_index + tx.count <= tx.period_end):
            raise Rejected("malformed-message", "readings lie outside the billing period")
        if not 0 < tx.count <= tx.block:
            raise Rejected("malformed-message", f"{tx.count} readings in a block of {tx.block}")
        key = self.store.customer_key(tx.customer)
        if key is None:  # perhaps its registration is being redelivered after a crash
            raise Deferred("unknown-customer-key", f"customer {tx.customer} registered no key")
        params = FheParameters.from_dict(key.parameters)
        if tx.parameters_id != params.parameters_id or tx.key_tag != key.key_tag:
            raise Rejected(
                "wrong-crypto-context",
                f"message names {tx.parameters_id}/{tx.key_tag[:12]}…, customer registered "
                f"{params.parameters_id}/{key.key_tag[:12]}…",
            )
        if not tx.c or len(tx.c) != len(tx.c_dup) or len(tx.c) > MAX_CIPHERTEXTS:
            raise Rejected("malformed-message", f"{len(tx.c)} and {len(tx.c_dup)} ciphertexts")
        if any(a == b for a, b in zip(tx.c, tx.c_dup, strict=True)):
            raise Rejected("integrity-protocol", "c and c' are the same ciphertext")
        await self.inspector.ciphertexts([*tx.c, *tx.c_dup], key.parameters, key.key_tag)
        slot = f"reading:{tx.first_index}"
        digest = self.check_replay(msg, env, tx.meter, slot, f"readings from {tx.first_index}")
        await self.publish(f"legal.in.reading.{tx.meter}", msg.data, digest.hex())
        self.store.accept(tx.meter, slot, digest)
        await self.log(
            EventKind.ARRIVAL,
            tx.meter,
            {
                "what": "transmission",
                "period": tx.period_id,
                "seq": tx.seq,
                "first_index": tx.first_index,
                "count": tx.count,
                "bytes": len(msg.data),
                "gateway": gateway,
            },
            event_id=f"arrival-{digest.hex()}",
        )

    def check_replay(self, msg: Msg, env: Envelope, meter: str, key: str, what: str) -> bytes:
        """Refuse a second message for the same (meter, key), unless it is a redelivery.

        JetStream redelivers the very same message after a crash of this service; that one
        is forwarded again (the legal zone deduplicates). A new message that repeats an
        accepted one, byte for byte or freshly made, is a replay.
        """
        digest = hashlib.sha256(env.body).digest()
        seen = self.store.accepted_digest(meter, key)
        if seen is not None and not (seen == digest and delivered_before(msg)):
            raise Rejected("replayed-index", f"{what} of {meter} were accepted before")
        return digest

    # -- from receivers ---------------------------------------------------------------------
    async def registration(self, msg: Msg) -> None:
        """One part of a key registration; the whole is checked when the last part is in."""
        env, customer = self.open_envelope(msg.data, MAX_REGISTRATION_BYTES, Role.RECEIVER)
        reg = KeyRegistration.decode(env.body)
        if reg.customer != customer:
            raise Rejected("customer-mismatch", f"signed by {customer}, body claims {reg.customer}")
        check_fresh(reg.sent_at, datetime.now(timezone.utc))
        if not 0 <= reg.part < reg.parts <= MAX_KEY_PARTS:
            raise Rejected("malformed-message", f"part {reg.part} of {reg.parts}")
        try:
            params = FheParameters.from_dict(reg.parameters)
        except (KeyError, ValueError) as exc:
            raise Rejected("unsupported-parameters", str(exc)) from None
        self.store.add_key_part(customer, reg.key_tag, reg.part, msg.data)
        stored = self.store.key_parts(customer, reg.key_tag)
        if len(stored) < reg.parts:
            return  # more parts to come
        parts = [KeyRegistration.decode(Envelope.decode(raw).body) for raw in stored]
        if any(
            (p.parts, p.digest, p.context, p.parameters)
            != (reg.parts, reg.digest, reg.context, reg.parameters)
            for p in parts
        ):
            raise Rejected("malformed-message", "the parts of the key registration disagree")
        blob = b"".join(p.evaluation_keys for p in parts)
        if hashlib.sha256(blob).hexdigest() != reg.digest:
            raise Rejected("malformed-evaluation-keys", "the parts do not add up to the digest")
        await self.inspector.registration(
            parts[0].context, parts[0].public_key, blob, params.to_dict(), reg.key_tag
        )
        # Ingress's own record first: uploads that follow may pass as soon as it is there;
        # legal waits until storage has every part of the keys.
        self.store.set_customer_key(CustomerKeyRecord(customer, reg.key_tag, params.to_dict()))
        for part, raw in enumerate(stored):
            await self.publish(
                f"legal.keys.{customer}", raw, f"keys-{customer}-{reg.key_tag}-{part}"
            )
        await self.log(
            EventKind.KEY_REGISTRATION,
            customer,
            {
                "key_tag": reg.key_tag,
                "parameters": params.parameters_id,
                "parts": reg.parts,
                "bytes": sum(len(raw) for raw in stored),
            },
            event_id=f"keys-{customer}-{reg.key_tag}",
        )

    async def report(self, msg: Msg) -> None:
        env, customer = self.open_envelope(msg.data, MAX_UPLOAD_BYTES, Role.RECEIVER)
        rep = VerificationReport.decode(env.body)
        meter = self.store.meter(rep.meter)
        if rep.customer != customer or meter is None or meter.customer_id != customer:
            raise Rejected("customer-mismatch", f"{customer} cannot report on {rep.meter}")
        if rep.verified:
            await self.log(EventKind.VERIFICATION_SUCCESS, rep.meter, {"period": rep.period_id})
            return
        self.store.add_flag(Flag(rep.meter, rep.period_id, rep.reason, rep.sent_at))
        await self.log(
            EventKind.VERIFICATION_FAILURE,
            rep.meter,
            {"period": rep.period_id, "reason": rep.reason, "customer": customer},
            event_id=f"verification-{hashlib.sha256(env.body).hexdigest()}",
        )
