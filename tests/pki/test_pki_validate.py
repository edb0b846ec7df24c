"""TrustStore: every certificate it must refuse, with the reason a log reader can act on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from pki_support import (
    ca_key,
    certificate_on_curve,
    crl_number,
    der,
    flip_last_byte,
    forge,
    log_events,
    make_pki,
    public_key,
    rejected_by,
    subject,
)

from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind
from metrocloud.pki import Curve, Pki, Role, SubCa, TrustStore, verify_signature
from metrocloud.pki.roles import key_usage

NOW = datetime.now(timezone.utc)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    """A second, independent PKI: same names, other keys."""
    authority = make_pki(tmp_path_factory.mktemp("other-pki"))
    yield authority
    authority.close()


def gateway(pki: Pki, cn: str = "gw-1", validity_days: int | None = None) -> x509.Certificate:
    key = public_key(Curve.BRAINPOOL_P256R1)
    return pki.issue(Role.GATEWAY, cn, key, validity_days=validity_days)


def test_good_certificate_is_returned_parsed(pki: Pki, trust: TrustStore) -> None:
    cert = gateway(pki, "gw-good")
    assert trust.verify(der(cert), expected_role=Role.GATEWAY) == cert


# -- time ----------------------------------------------------------------------------------------


def test_expired_at_a_later_time(pki: Pki, trust: TrustStore) -> None:
    cert = gateway(pki, "gw-short", validity_days=1)
    assert trust.verify(der(cert), at=datetime.now(timezone.utc) + DAY / 2) == cert
    error = rejected_by(trust, der(cert), at=datetime.now(timezone.utc) + 2 * DAY)
    assert error.reason == "certificate-expired"
    assert "gw-short" in error.detail


def test_expired_now(pki: Pki, trust: TrustStore) -> None:
    old = forge(
        pki, name=subject("gw-old", "gateway"), not_before=NOW - 10 * DAY, not_after=NOW - DAY
    )
    error = rejected_by(trust, der(old), expected_role=Role.GATEWAY)
    assert error.reason == "certificate-expired"
    assert "gw-old" in error.detail


def test_not_yet_valid(pki: Pki, trust: TrustStore) -> None:
    new = forge(pki, name=subject("gw-new", "gateway"), not_before=NOW + DAY)
    error = rejected_by(trust, der(new), expected_role=Role.GATEWAY)
    assert error.reason == "certificate-not-yet-valid"
    assert "gw-new" in error.detail
    assert trust.verify(der(new), at=NOW + 2 * DAY) == new


def test_expired_issuer(pki: Pki) -> None:
    """A sub-CA certificate past its end makes everything below it invalid."""
    genuine = pki.sub_cas[SubCa.GATEWAYS]
    expired = (
        x509.CertificateBuilder()
        .subject_name(genuine.subject)
        .issuer_name(pki.root.subject)
        .public_key(genuine.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 10 * DAY)
        .not_valid_after(NOW - DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
        .sign(ca_key(pki, None).private_key, hashes.SHA256())
    )
    subs = [expired, *(c for s, c in pki.sub_cas.items() if s is not SubCa.GATEWAYS)]
    crls = [pki.crl(s) for s in (None, *SubCa)]
    trust = TrustStore(pki.root, subs, crls)
    error = rejected_by(trust, der(gateway(pki, "gw-under-expired")))
    assert error.reason == "issuer-expired"
    assert "gateways" in error.detail


def test_naive_time_is_a_programming_error(pki: Pki, trust: TrustStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        trust.verify(der(gateway(pki)), at=datetime.now())


# -- revocation ----------------------------------------------------------------------------------


def test_revoked(pki: Pki) -> None:
    cert = gateway(pki, "gw-revoked")
    before = pki.trust_store()
    assert before.verify(der(cert)) == cert
    pki.revoke(cert.serial_number, x509.ReasonFlags.key_compromise)
    assert before.verify(der(cert)) == cert  # a trust store holds the CRLs it was given
    error = rejected_by(pki.trust_store(), der(cert), expected_role=Role.GATEWAY)
    assert error.reason == "certificate-revoked"
    assert "gw-revoked" in error.detail
    assert before.update_crl(pki.crl(SubCa.GATEWAYS)) is True
    assert rejected_by(before, der(cert)).reason == "certificate-revoked"
    entry = pki.crl(SubCa.GATEWAYS).get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    # before the revocation it was fine
    earlier = entry.revocation_date_utc - timedelta(seconds=1)
    assert pki.trust_store().verify(der(cert), at=earlier) == cert


def test_revoking_one_leaves_the_others_valid(pki: Pki) -> None:
    keep, drop = gateway(pki, "gw-keep"), gateway(pki, "gw-drop")
    pki.revoke(drop.serial_number)
    trust = pki.trust_store()
    assert trust.verify(der(keep)) == keep
    assert rejected_by(trust, der(drop)).reason == "certificate-revoked"


def test_revoked_sub_ca(fresh_pki: Pki) -> None:
    gw = gateway(fresh_pki, "gw-orphan")
    service = fresh_pki.issue(Role.SERVICE, "svc-1", public_key(Curve.P256))
    sub_ca = fresh_pki.sub_cas[SubCa.GATEWAYS]
    fresh_pki.revoke(sub_ca.serial_number, x509.ReasonFlags.ca_compromise)
    revoked = log_events(fresh_pki, EventKind.CERTIFICATE_REVOKED)
    assert revoked[-1].detail["serial"] == format(sub_ca.serial_number, "x")
    assert revoked[-1].detail["issuer"] == "root"
    root_crl = fresh_pki.crl(None)
    assert root_crl.get_revoked_certificate_by_serial_number(sub_ca.serial_number) is not None
    trust = fresh_pki.trust_store()
    error = rejected_by(trust, der(gw), expected_role=Role.GATEWAY)
    assert error.reason == "issuer-revoked"
    assert "gateways" in error.detail
    assert trust.verify(der(service)) == service  # other sub-CAs are untouched


# -- issuer --------------------------------------------------------------------------------------


def test_certificate_of_another_pki_with_the_same_names(
    other_pki: Pki, pki: Pki, trust: TrustStore
) -> None:
    foreign = gateway(other_pki, "gw-foreign")
    assert foreign.issuer == pki.sub_cas[SubCa.GATEWAYS].subject  # the names match
    error = rejected_by(trust, der(foreign), expected_role=Role.GATEWAY)
    assert error.reason == "bad-certificate-signature"
    assert "gw-foreign" in error.detail


def test_other_pki_ca_certificates_are_refused(other_pki: Pki, trust: TrustStore) -> None:
    assert rejected_by(trust, der(other_pki.root)).reason == "self-signed-certificate"
    other_sub = other_pki.sub_cas[SubCa.GATEWAYS]
    assert rejected_by(trust, der(other_sub)).reason in {"untrusted-issuer", "not-an-end-entity"}


def test_unknown_issuer_name(pki: Pki, trust: TrustStore) -> None:
    stranger = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "someone's CA")])
    cert = forge(pki, issuer=stranger, signer=ec.generate_private_key(ec.SECP256R1()))
    error = rejected_by(trust, der(cert))
    assert error.reason == "untrusted-issuer"
    assert "someone's CA" in error.detail


def test_end_entity_issued_by_the_root_itself(pki: Pki, trust: TrustStore) -> None:
    """Only sub-CAs issue end entities: a root-signed one has no role-granting issuer."""
    cert = forge(pki, None, name=subject("gw-from-root", "gateway"))
    cert.verify_directly_issued_by(pki.root)
    assert rejected_by(trust, der(cert)).reason == "untrusted-issuer"


def test_self_signed(pki: Pki, trust: TrustStore) -> None:
    key = ec.generate_private_key(ec.BrainpoolP256R1())
    name = subject("gw-self", "gateway")
    own = forge(pki, name=name, issuer=name, key=key.public_key(), signer=key)
    error = rejected_by(trust, der(own))
    assert error.reason == "self-signed-certificate"
    assert "gw-self" in error.detail
    assert rejected_by(trust, der(pki.root)).reason == "self-signed-certificate"


# -- malformed -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"not a certificate", b"\x30\x03\x02\x01\x01", b"\x30\x82\xff\xff"],
    ids=["empty", "text", "wrong-structure", "truncated-header"],
)
def test_malformed_bytes(trust: TrustStore, data: bytes) -> None:
    assert rejected_by(trust, data).reason == "malformed-certificate"


def test_truncated_and_pem_instead_of_der(pki: Pki, trust: TrustStore) -> None:
    cert = gateway(pki, "gw-cut")
    assert rejected_by(trust, der(cert)[:-10]).reason == "malformed-certificate"
    assert rejected_by(trust, cert.public_bytes(Encoding.PEM)).reason == "malformed-certificate"


def test_unparseable_extension_is_malformed(pki: Pki, trust: TrustStore) -> None:
    parsed = asn1_x509.Certificate.load(der(gateway(pki, "gw-dup")))
    tbs = parsed["tbs_certificate"].copy()
    extensions = list(tbs["extensions"])
    tbs["extensions"] = [*extensions, extensions[0]]  # the same extension twice
    signature = ca_key(pki, SubCa.GATEWAYS).sign(tbs.dump())
    raw = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature_value": signature,
        }
    ).dump()
    assert rejected_by(trust, raw).reason == "malformed-certificate"


@pytest.mark.parametrize(
    "damage",
    ["version", "issuer-name", "bit-string-name"],
)
def test_damaged_fields_are_malformed_not_crashes(pki: Pki, trust: TrustStore, damage: str) -> None:
    """Bytes that parse as a certificate but not field by field: refused, never raised raw."""
    raw = der(gateway(pki, "gw-bits"))
    if damage == "version":  # v3 (2) becomes 1, which X.509 does not know
        at = raw.index(b"\xa0\x03\x02\x01\x02") + 4
        damaged = raw[:at] + b"\x01" + raw[at + 1 :]
    elif damage == "issuer-name":  # the issuer's first attribute value gets tag 0
        damaged = raw.replace(b"\x0c\x0ametrocloud", b"\x00\x0ametrocloud", 1)
    else:  # the subject CN becomes a BIT STRING
        damaged = raw.replace(b"\x0c\x07gw-bits", b"\x03\x07\x00w-bits")
    assert damaged != raw
    assert rejected_by(trust, damaged).reason == "malformed-certificate"


def test_signature_bit_string_with_unused_bits_is_refused(pki: Pki, trust: TrustStore) -> None:
    """The same signature with "unused bits" set: other DER, which openssl refuses too."""
    cert = gateway(pki, "gw-unused")
    while cert.signature[-1] & 1:  # the last signature bit must be 0 to be "unused"
        cert = gateway(pki, "gw-unused")
    raw = der(cert)
    at = len(raw) - len(cert.signature) - 1
    assert raw[at] == 0  # the unused-bits octet of the signature BIT STRING
    variant = raw[:at] + b"\x01" + raw[at + 1 :]
    assert rejected_by(trust, variant).reason in {
        "malformed-certificate",
        "bad-certificate-signature",
    }


def test_broken_signature(pki: Pki, trust: TrustStore) -> None:
    cert = gateway(pki, "gw-flip")
    error = rejected_by(trust, flip_last_byte(der(cert)))
    assert error.reason == "bad-certificate-signature"


def test_key_on_an_unsupported_curve_is_refused_not_crashed(pki: Pki, trust: TrustStore) -> None:
    """A certificate a sub-CA signed whose key names a curve the library cannot load."""
    signer = ca_key(pki, SubCa.GATEWAYS)
    for curve_oid in ("1.3.132.0.1", "1.2.3.4"):  # sect163k1, nonsense
        raw = certificate_on_curve(gateway(pki, "gw-odd-curve"), curve_oid, signer)
        error = rejected_by(trust, raw)
        assert error.reason == "wrong-curve", curve_oid


# -- end entity and key usage --------------------------------------------------------------------


def test_ca_certificate_as_end_entity(pki: Pki, trust: TrustStore) -> None:
    ca_cert = forge(pki, name=subject("gw-ca", "gateway"), ca=True)
    error = rejected_by(trust, der(ca_cert), expected_role=Role.GATEWAY)
    assert error.reason == "not-an-end-entity"
    assert "gw-ca" in error.detail
    signer_only = forge(
        pki,
        name=subject("gw-signer", "gateway"),
        usage=key_usage(digital_signature=True, cert_sign=True),
    )
    assert rejected_by(trust, der(signer_only)).reason == "not-an-end-entity"


def test_sub_ca_presented_as_end_entity(pki: Pki, trust: TrustStore) -> None:
    for sub_ca in pki.sub_cas.values():
        error = rejected_by(trust, der(sub_ca))
        assert error.reason in {"not-an-end-entity", "untrusted-issuer"}


def test_key_that_may_not_sign(pki: Pki, trust: TrustStore) -> None:
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = forge(pki, name=subject("gw-agree", "gateway"), usage=usage)
    assert rejected_by(trust, der(cert)).reason == "wrong-key-usage"


# -- CRLs ----------------------------------------------------------------------------------------


def test_stale_crl(pki: Pki, trust: TrustStore) -> None:
    cert = gateway(pki, "gw-stale")
    sub_crl = pki.crl(SubCa.GATEWAYS)
    assert sub_crl.next_update_utc is not None
    error = rejected_by(trust, der(cert), at=sub_crl.next_update_utc + timedelta(seconds=1))
    assert error.reason == "crl-expired"
    assert "gateways" in error.detail
    root_crl = pki.crl(None)
    assert root_crl.next_update_utc is not None
    error = rejected_by(trust, der(cert), at=root_crl.next_update_utc + timedelta(seconds=1))
    assert error.reason == "crl-expired"
    assert "root" in error.detail


def test_missing_crl(pki: Pki) -> None:
    cert = gateway(pki, "gw-no-crl")
    subs = pki.sub_cas.values()
    without_sub = TrustStore(pki.root, subs, [pki.crl(None)])
    error = rejected_by(without_sub, der(cert))
    assert error.reason == "crl-missing"
    assert "gateways" in error.detail
    without_root = TrustStore(pki.root, subs, [pki.crl(s) for s in SubCa])
    error = rejected_by(without_root, der(cert))
    assert error.reason == "crl-missing"
    assert "root" in error.detail
    lax = TrustStore(pki.root, subs, [], require_crls=False)
    assert lax.verify(der(cert)) == cert


def test_crl_rollback(pki: Pki) -> None:
    old = pki.crl(SubCa.GATEWAYS)
    pki.revoke(gateway(pki, "gw-roll").serial_number)
    new = pki.crl(SubCa.GATEWAYS)
    assert crl_number(new) > crl_number(old)
    trust = pki.trust_store()
    with pytest.raises(Rejected) as info:
        trust.update_crl(old)
    assert info.value.reason == "crl-rollback"
    assert str(crl_number(old)) in info.value.detail
    assert trust.crl(new.issuer) == new  # the newer one is kept
    assert trust.update_crl(new) is False  # the same one again: nothing to do
    older_store = TrustStore(pki.root, pki.sub_cas.values(), [pki.crl(None), old])
    assert older_store.update_crl(new) is True
    assert older_store.crl(new.issuer) == new


def test_crl_with_a_bad_signature(pki: Pki, other_pki: Pki) -> None:
    trust = pki.trust_store()
    genuine = pki.crl(SubCa.GATEWAYS)
    tampered = x509.load_der_x509_crl(flip_last_byte(genuine.public_bytes(Encoding.DER)))
    with pytest.raises(Rejected) as info:
        trust.update_crl(tampered)
    assert info.value.reason == "bad-crl-signature"
    impostor = other_pki.crl(SubCa.GATEWAYS)  # same issuer name, other key
    assert impostor.issuer == genuine.issuer
    with pytest.raises(Rejected) as info:
        trust.update_crl(impostor)
    assert info.value.reason == "bad-crl-signature"
    assert trust.crl(genuine.issuer) == genuine
    with pytest.raises(Rejected) as info:
        TrustStore(pki.root, pki.sub_cas.values(), [pki.crl(None), impostor])
    assert info.value.reason == "bad-crl-signature"


def test_crl_of_an_unknown_ca(pki: Pki) -> None:
    stranger = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "someone's CA")])
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(stranger)
        .last_update(NOW)
        .next_update(NOW + DAY)
        .add_extension(x509.CRLNumber(99), critical=False)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    with pytest.raises(Rejected) as info:
        pki.trust_store().update_crl(crl)
    assert info.value.reason == "untrusted-issuer"


def test_crl_without_a_number(pki: Pki) -> None:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.sub_cas[SubCa.GATEWAYS].subject)
        .last_update(NOW)
        .next_update(NOW + DAY)
        .sign(ca_key(pki, SubCa.GATEWAYS).private_key, hashes.SHA256())
    )
    with pytest.raises(Rejected) as info:
        pki.trust_store().update_crl(crl)
    assert info.value.reason == "malformed-crl"


def test_crl_without_next_update(pki: Pki) -> None:
    """Such a CRL never expires; cryptography cannot build one, so it is assembled by hand."""
    parsed = asn1_crl.CertificateList.load(pki.crl(SubCa.GATEWAYS).public_bytes(Encoding.DER))
    tbs = parsed["tbs_cert_list"]
    kept = ("version", "signature", "issuer", "this_update", "crl_extensions")
    endless = asn1_crl.TbsCertList({field: tbs[field] for field in kept})
    raw = asn1_crl.CertificateList(
        {
            "tbs_cert_list": endless,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature": ca_key(pki, SubCa.GATEWAYS).sign(endless.dump()),
        }
    ).dump()
    crl = x509.load_der_x509_crl(raw)
    assert crl.next_update_utc is None
    with pytest.raises(Rejected) as info:
        pki.trust_store().update_crl(crl)
    assert info.value.reason == "malformed-crl"


# -- building the store --------------------------------------------------------------------------


def test_anchor_must_be_a_self_signed_ca(pki: Pki) -> None:
    with pytest.raises(ValueError, match="self-signed CA"):
        TrustStore(pki.sub_cas[SubCa.GATEWAYS])
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    name = subject("not-a-ca", "gateway")
    self_signed_leaf = forge(
        pki, name=name, issuer=name, key=leaf_key.public_key(), signer=leaf_key
    )
    with pytest.raises(ValueError, match="self-signed CA"):
        TrustStore(self_signed_leaf)


def test_only_root_issued_sub_cas_are_admitted(pki: Pki, other_pki: Pki) -> None:
    trust = TrustStore(pki.root)
    with pytest.raises(Rejected) as info:
        trust.add_sub_ca(other_pki.sub_cas[SubCa.GATEWAYS])
    assert info.value.reason == "untrusted-issuer"
    with pytest.raises(Rejected) as info:
        trust.add_sub_ca(forge(pki, None, name=subject("gateways CA?", "gateways")))
    assert info.value.reason == "wrong-role"  # root-signed, but not a CA
    assert trust.sub_cas == {}


# -- signatures ----------------------------------------------------------------------------------


def test_verify_signature(pki: Pki) -> None:
    key = ec.generate_private_key(ec.BrainpoolP256R1())
    cert = forge(pki, key=key.public_key())
    signature = key.sign(b"reading", ec.ECDSA(hashes.SHA256()))
    verify_signature(cert, b"reading", signature)
    for data, sig in ((b"readinG", signature), (b"reading", flip_last_byte(signature))):
        with pytest.raises(Rejected) as info:
            verify_signature(cert, data, sig)
        assert info.value.reason == "bad-signature"
    with pytest.raises(Rejected) as info:
        verify_signature(cert, b"reading", b"garbage")
    assert info.value.reason == "bad-signature"


def test_verify_signature_needs_an_ec_key(pki: Pki) -> None:
    ed_cert = forge(pki, key=ed25519.Ed25519PrivateKey.generate().public_key())  # type: ignore[arg-type]
    with pytest.raises(Rejected) as info:
        verify_signature(ed_cert, b"x", b"y")
    assert info.value.reason == "unsupported-key"


def test_from_directory_reads_what_the_pki_wrote(pki: Pki, tmp_path: Path) -> None:
    cert = gateway(pki, "gw-files")
    pki.trust_store()  # makes sure every CRL file is current
    trust = TrustStore.from_directory(pki.directory)
    assert trust.verify(der(cert)) == cert
    assert trust.sub_cas == pki.sub_cas
