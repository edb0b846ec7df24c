"""The receiver's check of a result: the integrity protocol's last step.

A result is accepted only if ``legal``'s signature holds, ``dec(r) = dec(r')`` slot for
slot, the registers are consistent (tariff + error = total), and the index sums equal those
of exactly the readings of the billing period. Anything else is a verdict with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from metrocloud.core.clock import BillingPeriod
from metrocloud.core.errors import Rejected
from metrocloud.core.messages import Envelope, TariffResult
from metrocloud.fhe.context import CustomerKeyPair, deserialize_ciphertext
from metrocloud.pki import Role, verify_certificate, verify_signature
from metrocloud.pki.validate import subject_common_name
from metrocloud.tariffs import RegisterSet, TariffProgram
from metrocloud.tariffs.base import ResultLayout, expected_integrity_sums

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
    trust_anchor: x509.Certificate,
    *,
    meter_id: str,
    period: BillingPeriod,
    contract: TariffProgram | None = None,
) -> Verdict:
    """Check one result; with ``contract`` (the customer's tariff and its configuration),
    also that legal applied that tariff and that the bill is what its prices give."""

    def fail(reason: str, result: TariffResult | None = None) -> Verdict:
        return Verdict(meter_id, period.period_id, False, reason, None, result)

    try:
        env = Envelope.decode(envelope_bytes)
        cert = verify_certificate(env.certificate, trust_anchor, expected_role=Role.SERVICE)
        if subject_common_name(cert) != LEGAL_SERVICE:
            return fail(f"result signed by {subject_common_name(cert)}, not by legal")
        verify_signature(cert, env.body, env.signature)
        result = TariffResult.decode(env.body)
    except Rejected as exc:
        return fail(f"result not authentic: {exc}")
    if (result.meter, result.period_id) != (meter_id, period.period_id):
        return fail(f"result is for {result.meter} {result.period_id}", result)
    if contract is not None and (
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
    layout = ResultLayout(result.registers, result.block, keys.params.row)
    try:
        r = deserialize_ciphertext(result.r, keys.params, keys.key_tag)
        r_dup = deserialize_ciphertext(result.r_dup, keys.params, keys.key_tag)
    except Rejected as exc:
        return fail(f"result undecryptable: {exc}", result)
    slots = keys.decrypt(r, keys.params.slots)
    slots_dup = keys.decrypt(r_dup, keys.params.slots)
    if slots != slots_dup:
        differing = sum(a != b for a, b in zip(slots, slots_dup, strict=True))
        return fail(f"dec(r) != dec(r'): {differing} slots differ, result manipulated", result)
    registers = layout.decode(slots)
    if not registers.consistent:
        return fail("tariff registers plus error register differ from the total", result)
    if contract is not None and registers.bill_microcent != contract.bill(
        registers.tariff_registers_wh
    ):
        return fail("the bill is not what the contract's prices give for the registers", result)
    expected = expected_integrity_sums(
        meter_id, range(period.start, period.end), keys.params.plaintext_modulus
    )
    if (registers.index_sum, registers.fingerprint_sum) != expected:
        return fail("index check failed: readings missing, duplicated or foreign", result)
    return Verdict(meter_id, period.period_id, True, "verified", registers, result)
