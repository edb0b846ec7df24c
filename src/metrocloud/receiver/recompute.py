"""Recompute, don't trust: the bill again, from the gateway's signed encrypted readings.

The duplicate check (:mod:`.verify`) shows that the cloud computed the same thing on ``c``
and on ``c'``; a manipulation applied to both consistently passes it. A customer's display
can do more: pull the period's transmissions as the gateway signed them, decrypt them (it
holds the secret key), lay the quarter hours out again (:meth:`TariffProgram.unpack`) and
run the plaintext reference of the same tariff program over them. The cloud's registers
must equal the recomputed ones, register for register and to the micro-cent.

Each transmission is checked first: the gateway's certificate and signature, that it is
for this meter, period and key, ``dec(c) = dec(c')`` slot for slot, that its energies add
up, and that its index sums are exactly those of its quarter hours. Together the
transmissions must cover the billing period once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from metrocloud.core.clock import BillingPeriod
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, Transmission
from metrocloud.fhe.context import CustomerKeyPair, deserialize_ciphertext
from metrocloud.fhe.packing import Interval
from metrocloud.pki import Role, TrustStore, verify_signature
from metrocloud.pki.validate import subject_common_name
from metrocloud.tariffs import RegisterSet, TariffProgram
from metrocloud.tariffs.base import TransmissionContent, expected_integrity_sums


class ReadingsRejected(Exception):
    """A transmission that cannot be recomputed from; the message says why."""


@dataclass(frozen=True)
class Recomputation:
    """The outcome of recomputing one billing period.

    ``status``: ``match`` (the cloud's registers are the recomputed ones), ``mismatch``
    (they differ: ``reason`` names how), ``failed`` (the readings could not be checked or
    were incomplete: ``reason`` says why), ``not-run`` (no result to compare with).
    """

    status: str
    reason: str
    registers: RegisterSet | None = None
    intervals: tuple[Interval, ...] = field(default=(), repr=False)
    error_wh: int = 0
    gateway: str = ""

    @property
    def matches(self) -> bool:
        return self.status == "match"


def open_transmission(
    raw: bytes,
    keys: CustomerKeyPair,
    trust: TrustStore,
    *,
    meter_id: str,
    customer_id: str,
    period: BillingPeriod,
    contract: TariffProgram,
) -> tuple[Transmission, TransmissionContent]:
    """One transmission checked, decrypted and unpacked; :class:`ReadingsRejected` if not."""
    try:
        env = Envelope.decode(raw)
        cert = trust.verify(env.certificate, expected_role=Role.GATEWAY)
        verify_signature(cert, env.body, env.signature)
        tx = Transmission.decode(env.body)
    except Rejected as exc:
        raise ReadingsRejected(f"transmission not authentic: {exc}") from None
    if subject_common_name(cert) != tx.gateway:
        raise ReadingsRejected(
            f"transmission signed by {subject_common_name(cert)} as {tx.gateway}"
        )
    where = f"transmission {tx.seq}"
    if (tx.meter, tx.customer, tx.period_start, tx.period_end) != (
        meter_id,
        customer_id,
        period.start,
        period.end,
    ):
        raise ReadingsRejected(f"{where} is for {tx.meter} of {tx.customer}, {tx.period_id}")
    if not tx.c or len(tx.c) != len(tx.c_dup):
        raise ReadingsRejected(f"{where} has no or unequal numbers of ciphertexts")
    try:
        c = [deserialize_ciphertext(b, keys.params, keys.key_tag) for b in tx.c]
        c_dup = [deserialize_ciphertext(b, keys.params, keys.key_tag) for b in tx.c_dup]
    except Rejected as exc:
        raise ReadingsRejected(f"{where} cannot be decrypted: {exc}") from None
    slots = [keys.decrypt(ct, keys.params.slots) for ct in c]
    if slots != [keys.decrypt(ct, keys.params.slots) for ct in c_dup]:
        raise ReadingsRejected(f"{where}: dec(c) != dec(c'), the readings were changed")
    try:
        content = contract.unpack(meter_id, slots, tx.first_index, tx.count, period.start)
    except ValueError as exc:
        raise ReadingsRejected(f"{where} does not fit the tariff's layout: {exc}") from None
    if not content.consistent:
        raise ReadingsRejected(f"{where}: valid and error energy do not add up to its total")
    expected = expected_integrity_sums(
        meter_id, range(tx.first_index, tx.first_index + tx.count), keys.params.plaintext_modulus
    )
    if (content.index_sum, content.fingerprint_sum) != expected:
        raise ReadingsRejected(f"{where}: its index sums are not those of its quarter hours")
    return tx, content


def recompute(
    transmissions: Sequence[bytes],
    keys: CustomerKeyPair,
    trust: TrustStore,
    *,
    meter_id: str,
    customer_id: str,
    period: BillingPeriod,
    contract: TariffProgram,
    cloud: RegisterSet | None,
) -> Recomputation:
    """Recompute the period from its transmissions and compare with the cloud's registers
    (``cloud``: the decrypted result, None when it did not verify)."""
    try:
        opened = [
            open_transmission(
                raw,
                keys,
                trust,
                meter_id=meter_id,
                customer_id=customer_id,
                period=period,
                contract=contract,
            )
            for raw in transmissions
        ]
    except ReadingsRejected as exc:
        return Recomputation("failed", str(exc))
    opened.sort(key=lambda pair: pair[0].first_index)
    contents = [content for _, content in opened]
    indices = [iv.index for content in contents for iv in content.intervals]
    if indices != list(range(period.start, period.end)):
        return Recomputation(
            "failed",
            f"the transmissions hold {len(indices)} quarter hours; the period has "
            f"{period.intervals} (each exactly once)",
        )
    registers = contract.recompute(meter_id, contents)
    intervals = tuple(iv for content in contents for iv in content.intervals)
    error_wh = sum(content.error_wh for content in contents)
    gateway = opened[0][0].gateway if opened else ""
    if cloud is None:
        return Recomputation(
            "not-run", "no verified result to compare with", registers, intervals, error_wh, gateway
        )
    found = cloud.differences(registers, contract.register_names(), this="cloud", that="recomputed")
    if found:
        return Recomputation(
            "mismatch",
            "the cloud's result differs from the recomputation: " + "; ".join(found),
            registers,
            intervals,
            error_wh,
            gateway,
        )
    return Recomputation(
        "match",
        "the cloud's registers and bill equal the recomputation from the gateway's readings",
        registers,
        intervals,
        error_wh,
        gateway,
    )
