"""Helpers of the PKI tests: hand-made certificates and CSRs, logbook reading, openssl.

Imported by the test modules of this folder (pytest puts the folder on ``sys.path``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from metrocloud.core.errors import Rejected
from metrocloud.core.events import EventKind, LogEvent
from metrocloud.logbook.chain import HashChainLogbook
from metrocloud.pki import Curve, FileKeyStore, Pki, Role, SoftwareKey, SubCa, TrustStore
from metrocloud.pki.roles import key_usage

OPENSSL = "/usr/bin/openssl"
ALL_BRAINPOOL = {sub: Curve.BRAINPOOL_P256R1 for sub in SubCa}
"""``ca_curves`` of a hierarchy whose sub-CAs are all on brainpoolP256r1."""

PublicKey = ec.EllipticCurvePublicKey


def make_pki(directory: Path, **options: Any) -> Pki:
    """A new PKI in ``directory/pki`` with clear key files in ``directory/keys``."""
    return Pki.init(directory / "pki", FileKeyStore(directory / "keys"), **options)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def public_key(curve: Curve = Curve.P256) -> PublicKey:
    return ec.generate_private_key(curve.ec_curve).public_key()


def extension(cert: x509.Certificate | x509.CertificateRevocationList, kind: type[Any]) -> Any:
    """The extension of ``kind`` (``x509.Extension``): ``.value`` and ``.critical``."""
    return cert.extensions.get_extension_for_class(kind)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return int(extension(crl, x509.CRLNumber).value.crl_number)


def curve_of(cert: x509.Certificate) -> str:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key.curve.name


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def units(cert: x509.Certificate) -> list[str]:
    return [
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    ]


def ca_key(pki: Pki, sub_ca: SubCa | None) -> SoftwareKey:
    """A CA's key, read from the PKI's key files (``root`` or ``ca-<sub-CA>``)."""
    assert isinstance(pki.keys, FileKeyStore)
    return pki.keys.load("root" if sub_ca is None else f"ca-{sub_ca.value}")


def subject(cn: str, *units: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "metrocloud")]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


def forge(
    pki: Pki,
    sub_ca: SubCa | None = SubCa.GATEWAYS,
    *,
    name: x509.Name | None = None,
    usages: Sequence[x509.ObjectIdentifier] | None = (Role.GATEWAY.oid,),
    key: PublicKey | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    ca: bool = False,
    usage: x509.KeyUsage | None = None,
    issuer: x509.Name | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> x509.Certificate:
    """A certificate made by hand, by default a gateway's signed with the gateways CA key.

    ``usages=None`` leaves out the ExtendedKeyUsage; ``sub_ca=None`` signs with the root.
    """
    issuer_cert = pki.root if sub_ca is None else pki.sub_cas[sub_ca]
    now = datetime.now(timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name or subject("gw-forged", "gateway"))
        .issuer_name(issuer or issuer_cert.subject)
        .public_key(key or public_key(Curve.BRAINPOOL_P256R1))
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(usage or key_usage(digital_signature=True, cert_sign=ca), critical=True)
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(signer or ca_key(pki, sub_ca).private_key, hashes.SHA256())


def csr_for(
    key: ec.EllipticCurvePrivateKey | Any,
    cn: str | None = "device-1",
    extensions: Iterable[x509.ExtensionType] = (),
    *,
    name: x509.Name | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR signed by ``key`` (with SHA-256; Ed25519 hashes itself) asking for ``extensions``."""
    attrs = [] if cn is None else [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    builder = x509.CertificateSigningRequestBuilder().subject_name(name or x509.Name(attrs))
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def flip_last_byte(data: bytes) -> bytes:
    """``data`` with its last byte changed: in a DER certificate, CSR or CRL the signature."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def log_events(pki: Pki, kind: EventKind | None = None) -> list[LogEvent]:
    """Every event in the PKI's own logbook, read through a connection of our own."""
    with HashChainLogbook(pki.directory / "logbook.sqlite") as book:
        assert book.verify().ok
        return [entry.event for entry in book.entries(kind=kind)]


def refused_by_pki(pki: Pki, reason: str, action: Callable[[], object]) -> LogEvent:
    """Run ``action``: it must raise ``Rejected(reason)`` and log exactly one rejection."""
    before = len(log_events(pki))
    with pytest.raises(Rejected) as info:
        action()
    assert info.value.reason == reason, info.value
    new = log_events(pki)[before:]
    assert [e.kind for e in new] == [EventKind.REJECTION]
    event = new[0]
    assert event.actor == "pki"
    assert event.detail["reason"] == reason
    assert event.detail["detail"] == info.value.detail
    return event


def rejected_by(trust: TrustStore, cert_der: bytes, **options: Any) -> Rejected:
    """The ``Rejected`` that ``trust.verify`` raises for ``cert_der``."""
    with pytest.raises(Rejected) as info:
        trust.verify(cert_der, **options)
    return info.value


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the system ``openssl`` (never raises on a non-zero exit)."""
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def _spki_on_curve(spki: Any, curve_oid: str) -> Any:
    parameters = asn1_keys.ECDomainParameters(name="named", value=curve_oid)
    algorithm = asn1_keys.PublicKeyAlgorithm({"algorithm": "ec", "parameters": parameters})
    return asn1_keys.PublicKeyInfo({"algorithm": algorithm, "public_key": spki["public_key"]})


def certificate_on_curve(cert: x509.Certificate, curve_oid: str, signer: SoftwareKey) -> bytes:
    """``cert`` (DER) with its key's curve OID replaced, re-signed by ``signer``."""
    parsed = asn1_x509.Certificate.load(der(cert))
    tbs = parsed["tbs_certificate"].copy()
    tbs["subject_public_key_info"] = _spki_on_curve(tbs["subject_public_key_info"], curve_oid)
    return asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature_value": signer.sign(tbs.dump()),
        }
    ).dump()


def csr_on_curve(key: ec.EllipticCurvePrivateKey, curve_oid: str, cn: str = "device-1") -> bytes:
    """A CSR (DER) for ``key`` that names another curve, validly self-signed by ``key``."""
    parsed = asn1_csr.CertificationRequest.load(csr_for(key, cn).public_bytes(Encoding.DER))
    info = parsed["certification_request_info"].copy()
    info["subject_pk_info"] = _spki_on_curve(info["subject_pk_info"], curve_oid)
    signature = key.sign(info.dump(), ec.ECDSA(hashes.SHA256()))
    return asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature": signature,
        }
    ).dump()
