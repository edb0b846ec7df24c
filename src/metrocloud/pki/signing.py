"""Sign certificates, CRLs and CSRs with any :class:`~metrocloud.pki.keys.SigningKey`.

``cryptography``'s builders sign only with a private key object in memory; a key inside an
HSM is not one. So a builder signs once with a throw-away key on the signer's curve, which
fixes the to-be-signed bytes (the signature algorithm is ecdsa-with-SHA256 either way), and
the real signer then signs exactly those bytes. The result is reassembled with ``asn1crypto``
and parsed back; the caller's checks (signature against the issuer's public key) then run
on what will be published.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from asn1crypto import crl as asn1_crl
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from metrocloud.pki.keys import Curve, SigningKey, SoftwareKey


@cache
def _placeholder_key(curve: Curve) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve.ec_curve)


def _placeholder(signer: SigningKey) -> ec.EllipticCurvePrivateKey:
    if isinstance(signer, SoftwareKey):
        return signer.private_key  # the key is in memory: sign directly, nothing to replace
    return _placeholder_key(signer.curve)


def _with_signature(asn1_type: Any, draft_der: bytes, body: str, signature: bytes) -> bytes:
    """Re-encode a signed ASN.1 structure (body, algorithm, signature) with ``signature``.

    The body keeps its parsed bytes, so it is exactly what was signed."""
    parsed = asn1_type.load(draft_der)
    names = list(parsed)  # body, signature algorithm, signature value, in schema order
    fields = {body: parsed[body], names[1]: parsed[names[1]], names[2]: signature}
    return bytes(asn1_type(fields).dump())


def sign_certificate(builder: x509.CertificateBuilder, signer: SigningKey) -> x509.Certificate:
    """Build and sign a certificate with ``signer`` (ECDSA with SHA-256)."""
    draft = builder.sign(_placeholder(signer), hashes.SHA256())
    if isinstance(signer, SoftwareKey):
        return draft
    der = _with_signature(
        asn1_x509.Certificate,
        draft.public_bytes(Encoding.DER),
        "tbs_certificate",
        signer.sign(draft.tbs_certificate_bytes),
    )
    return x509.load_der_x509_certificate(der)


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: SigningKey
) -> x509.CertificateRevocationList:
    """Build and sign a CRL with ``signer`` (ECDSA with SHA-256)."""
    draft = builder.sign(_placeholder(signer), hashes.SHA256())
    if isinstance(signer, SoftwareKey):
        return draft
    der = _with_signature(
        asn1_crl.CertificateList,
        draft.public_bytes(Encoding.DER),
        "tbs_cert_list",
        signer.sign(draft.tbs_certlist_bytes),
    )
    return x509.load_der_x509_crl(der)


def sign_csr(
    builder: x509.CertificateSigningRequestBuilder, signer: SigningKey
) -> x509.CertificateSigningRequest:
    """Build a CSR for ``signer``'s public key, signed by it (proof of possession).

    The public key in a CSR is the signer's, so a throw-away key cannot stand in for it;
    the request info is rebuilt with the signer's public key before signing.
    """
    draft = builder.sign(_placeholder(signer), hashes.SHA256())
    if isinstance(signer, SoftwareKey):
        return draft
    parsed = asn1_csr.CertificationRequest.load(draft.public_bytes(Encoding.DER))
    info = parsed["certification_request_info"]
    spki = signer.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    info = asn1_csr.CertificationRequestInfo(
        {
            "version": info["version"],
            "subject": info["subject"],
            "subject_pk_info": asn1_x509.PublicKeyInfo.load(spki),
            "attributes": info["attributes"],
        }
    )
    signed = asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature": signer.sign(info.dump()),
        }
    )
    return x509.load_der_x509_csr(signed.dump())
