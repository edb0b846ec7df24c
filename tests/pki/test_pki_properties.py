"""Properties: revocation is exact, signatures round-trip, CRL numbers only grow, no crashes."""

from __future__ import annotations

import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pki_support import crl_number, der, public_key

from metrocloud.core.errors import Rejected
from metrocloud.pki import (
    PROFILES,
    Curve,
    Pki,
    Role,
    SoftwareKey,
    SubCa,
    TrustStore,
    generate_private_key,
    verify_signature,
)
from metrocloud.pki.signing import sign_csr

PKI_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
roles = st.sampled_from(list(Role))


def issue(pki: Pki, role: Role, cn: str = "holder") -> x509.Certificate:
    return pki.issue(role, cn, public_key(PROFILES[role].default_curve))


@PKI_SETTINGS
@given(plan=st.lists(st.tuples(roles, st.booleans()), min_size=1, max_size=6))
def test_exactly_the_revoked_certificates_are_refused(
    pki: Pki, plan: list[tuple[Role, bool]]
) -> None:
    certs = [(issue(pki, role), role, revoke) for role, revoke in plan]
    for cert, _, revoke in certs:
        if revoke:
            pki.revoke(cert.serial_number)
    trust = pki.trust_store()
    for cert, role, revoke in certs:
        if revoke:
            with pytest.raises(Rejected) as info:
                trust.verify(der(cert), expected_role=role)
            assert info.value.reason == "certificate-revoked"
        else:
            assert trust.verify(der(cert), expected_role=role) == cert
    listed = {entry.serial_number for sub in SubCa for entry in pki.crl(sub)}
    assert {c.serial_number for c, _, revoke in certs if revoke} <= listed
    assert not {c.serial_number for c, _, revoke in certs if not revoke} & listed


@pytest.fixture(scope="module")
def signers(pki: Pki) -> dict[Curve, tuple[SoftwareKey, x509.Certificate]]:
    """A key on each curve with a gateway certificate for it."""
    result = {}
    for curve in Curve:
        key = SoftwareKey(f"gw-{curve.value}", generate_private_key(curve))
        result[curve] = (key, pki.issue(Role.GATEWAY, key.name, key.public_key()))
    return result


@settings(max_examples=60, deadline=None)
@given(curve=st.sampled_from(list(Curve)), message=st.binary(max_size=512), data=st.data())
def test_sign_verify_round_trip_and_bit_flips(
    signers: dict[Curve, tuple[SoftwareKey, x509.Certificate]],
    curve: Curve,
    message: bytes,
    data: st.DataObject,
) -> None:
    key, cert = signers[curve]
    signature = key.sign(message)
    verify_signature(cert, message, signature)
    _other_key, other_cert = signers[next(c for c in Curve if c is not curve)]
    with pytest.raises(Rejected):
        verify_signature(other_cert, message, signature)
    if not message:
        return
    bit = data.draw(st.integers(min_value=0, max_value=len(message) * 8 - 1), label="bit")
    flipped = bytearray(message)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(Rejected) as info:
        verify_signature(cert, bytes(flipped), signature)
    assert info.value.reason == "bad-signature"


REVOKING = {SubCa.GATEWAYS: Role.GATEWAY, SubCa.SERVICES: Role.SERVICE, None: None}


@PKI_SETTINGS
@given(steps=st.lists(st.sampled_from(list(REVOKING)), min_size=1, max_size=6))
def test_crl_numbers_strictly_increase(pki: Pki, steps: list[SubCa | None]) -> None:
    """Each step revokes one certificate of a sub-CA, or (None) only fetches the CRLs."""
    watched = [SubCa.GATEWAYS, SubCa.SERVICES]
    history = {sub: [pki.crl(sub)] for sub in watched}
    for step in steps:
        before = {sub: crl_number(history[sub][-1]) for sub in watched}
        if step is not None:
            role = REVOKING[step]
            assert role is not None
            pki.revoke(issue(pki, role).serial_number)
        for sub in watched:
            crl = pki.crl(sub)
            if sub is step:
                assert crl_number(crl) > before[sub]
            else:
                assert crl_number(crl) == before[sub]
                assert crl.public_bytes(Encoding.DER) == history[sub][-1].public_bytes(Encoding.DER)
            history[sub].append(crl)
    # a trust store holding the newest CRL refuses every older one
    trust = pki.trust_store()
    for sub in watched:
        newest = crl_number(history[sub][-1])
        for crl in history[sub]:
            if crl_number(crl) < newest:
                with pytest.raises(Rejected) as info:
                    trust.update_crl(crl)
                assert info.value.reason == "crl-rollback"
            else:
                assert trust.update_crl(crl) is False
        assert trust.crl(history[sub][-1].issuer) == history[sub][-1]


@pytest.fixture(scope="module")
def crl_series(pki: Pki) -> list[x509.CertificateRevocationList]:
    """Four successive CRLs of the authorities CA."""
    series = [pki.crl(SubCa.AUTHORITIES)]
    for _ in range(3):
        pki.revoke(issue(pki, Role.AUTHORITY).serial_number)
        series.append(pki.crl(SubCa.AUTHORITIES))
    return series


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(range(4)))
def test_trust_store_keeps_the_newest_crl_whatever_the_order(
    pki: Pki, crl_series: list[x509.CertificateRevocationList], order: list[int]
) -> None:
    trust = TrustStore(pki.root, pki.sub_cas.values(), [pki.crl(None)])
    held = -1
    for index in order:
        crl = crl_series[index]
        if crl_number(crl) < held:
            with pytest.raises(Rejected) as info:
                trust.update_crl(crl)
            assert info.value.reason == "crl-rollback"
        else:
            assert trust.update_crl(crl) is True
            held = crl_number(crl)
    assert trust.crl(crl_series[0].issuer) == crl_series[-1]


# -- no input crashes the checks -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(pki: Pki) -> bytes:
    return der(issue(pki, Role.GATEWAY, "gw-sample"))


@pytest.fixture(scope="module")
def frozen_trust(pki: Pki, sample: bytes) -> TrustStore:
    """A trust store made once for the module (verifying changes nothing in it)."""
    return pki.trust_store()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_changed_byte_is_refused_with_a_reason(
    frozen_trust: TrustStore, sample: bytes, data: st.DataObject
) -> None:
    assert frozen_trust.verify(sample)
    position = data.draw(st.integers(min_value=0, max_value=len(sample) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != sample[position]), label="value")
    mutated = sample[:position] + bytes([value]) + sample[position + 1 :]
    with pytest.raises(Rejected):
        frozen_trust.verify(mutated)


@settings(max_examples=300, deadline=None)
@given(noise=st.binary(max_size=600))
def test_random_bytes_are_malformed(frozen_trust: TrustStore, noise: bytes) -> None:
    with pytest.raises(Rejected) as info:
        frozen_trust.verify(noise)
    assert info.value.reason == "malformed-certificate"


@pytest.fixture(scope="module")
def sample_csr() -> bytes:
    key = SoftwareKey("dev", generate_private_key(Curve.P256))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "svc-fuzz")])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName("svc.example")]), critical=False
    )
    return sign_csr(builder, key).public_bytes(Encoding.DER)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_a_csr_is_refused_with_a_reason(
    pki: Pki, sample_csr: bytes, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(sample_csr) - 1), label="position")
    value = data.draw(
        st.integers(0, 255).filter(lambda v: v != sample_csr[position]), label="value"
    )
    mutated = sample_csr[:position] + bytes([value]) + sample_csr[position + 1 :]
    with pytest.raises(Rejected):
        pki.issue_from_csr(mutated, Role.SERVICE)


def test_a_name_cryptography_only_warns_about_is_refused_quietly(
    frozen_trust: TrustStore, sample: bytes
) -> None:
    """The issuer's common name turned into a country name (which must have 2 letters): the
    certificate is refused as malformed, and no warning escapes (hypothesis found this)."""
    common_name, country_name = b"\x06\x03\x55\x04\x03", b"\x06\x03\x55\x04\x06"
    assert common_name in sample
    mutated = sample.replace(common_name, country_name, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Rejected) as info:
            frozen_trust.verify(mutated)
    assert info.value.reason == "malformed-certificate" and caught == []
