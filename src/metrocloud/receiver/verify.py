"""The receiver's check of a result: the integrity protocol's last step.

A result is accepted only if ``legal``'s signature holds, ``dec(r) = dec(r')`` slot for
slot, the registers are consistent (tariff + error = total), and the index sums equal those
of exactly the readings of the billing period. Anything else is a verdict with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from metrocloud.core.clock import BillingPeriod
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, TariffResult
from metrocloud.fhe.context import CustomerKeyPair, deserialize_ciphertext
from metrocloud.pki import Role, TrustStore, verify_signature
from metrocloud.pki.validate import subject_common_name
from metrocloud.tariffs import RegisterSet, TariffProgram
from metrocloud.tariffs.base import expected_integrity_sums

LEGAL_SERVICE = "legal"


@dataclass(frozen=True)
class Verdict:
    meter_id: str
    period_id: str
    verified: bool
    reason: str
    registers: RegisterSet | None = None
    result: TariffResult | None = None


def check_result(
    envelope_bytes: bytes,
    keys: CustomerKeyPair,
    trust: TrustStore,
    *,
    meter_id: str,
    period: BillingPeriod,
    contract: TariffProgram,
) -> Verdict:
    """Check one result against the customer's ``contract`` (tariff program and its
    configuration): legal must have applied that tariff, and the bill must be what its
    prices give for the registers."""

    def fail(reason: str, result: TariffResult | None = None) -> Verdict:
        return Verdict(meter_id, period.period_id, False, reason, None, result)

    try:
        env = Envelope.decode(envelope_bytes)
        cert = trust.verify(env.certificate, expected_role=Role.SERVICE)
        if subject_common_name(cert) != LEGAL_SERVICE:
            return fail(f"result signed by {subject_common_name(cert)}, not by legal")
        verify_signature(cert, env.body, env.signature)
        result = TariffResult.decode(env.body)
    except Rejected as exc:
        return fail(f"result not authentic: {exc}")
    if (result.meter, result.period_id) != (meter_id, period.period_id):
        return fail(f"result is for {result.meter} {result.period_id}", result)
    if (
        result.tariff.get("name") != contract.name
        or result.tariff_config_digest != contract.config_digest
        or result.registers != contract.tariff_registers
    ):
        return fail(
            f"result computed with tariff {result.tariff.get('name')} "
            f"(configuration {result.tariff_config_digest[:12]}…), not the contract's "
            f"{contract.name} ({contract.config_digest[:12]}…)",
            result,
        )
    if not result.r or len(result.r) != len(result.r_dup):
        return fail("result has no or unequal numbers of ciphertexts", result)
    try:
        r = [deserialize_ciphertext(b, keys.params, keys.key_tag) for b in result.r]
        r_dup = [deserialize_ciphertext(b, keys.params, keys.key_tag) for b in result.r_dup]
    except Rejected as exc:
        return fail(f"result undecryptable: {exc}", result)
    slots = [keys.decrypt(c, keys.params.slots) for c in r]
    slots_dup = [keys.decrypt(c, keys.params.slots) for c in r_dup]
    if slots != slots_dup:
        differing = sum(
            a != b for x, y in zip(slots, slots_dup, strict=True) for a, b in zip(x, y, strict=True)
        )
        return fail(f"dec(r) != dec(r'): {differing} slots differ, result manipulated", result)
    try:
        registers = contract.decode(slots, result.block)
    except (ValueError, IndexError) as exc:
        return fail(f"result does not fit the contract's layout: {exc}", result)
    if not registers.consistent:
        return fail("tariff registers plus error register differ from the total", result)
    if registers.bill_microcent != contract.bill(registers.tariff_registers_wh):
        return fail("the bill is not what the contract's prices give for the registers", result)
    expected = expected_integrity_sums(
        meter_id, range(period.start, period.end), keys.params.plaintext_modulus
    )
    if (registers.index_sum, registers.fingerprint_sum) != expected:
        return fail("index check failed: readings missing, duplicated or foreign", result)
    return Verdict(meter_id, period.period_id, True, "verified", registers, result)
