"""Validation of metrocloud certificates and signatures.

Certificates are checked against one trust anchor: the end entity must be directly issued
by it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from metrocloud.core.errors import Rejected
from metrocloud.pki.roles import ROLE_OID, Role


def subject_common_name(certificate: x509.Certificate) -> str:
    """The subject CN, or ``"<no CN>"``; for messages, never for decisions."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "<no CN>"


def certificate_role(certificate: x509.Certificate) -> Role:
    """The role in the subject OU; ``Rejected("wrong-role")`` if missing, unknown or several."""
    cn = subject_common_name(certificate)
    values = [str(a.value) for a in certificate.subject.get_attributes_for_oid(ROLE_OID)]
    if len(values) != 1:
        raise Rejected("wrong-role", f"certificate {cn} carries {len(values)} roles, not one")
    try:
        return Role(values[0])
    except ValueError:
        raise Rejected("wrong-role", f"certificate {cn} has unknown role {values[0]!r}") from None


def verify_certificate(
    cert_der: bytes,
    trust_anchor: x509.Certificate,
    *,
    expected_role: Role | None = None,
    at: datetime | None = None,
) -> x509.Certificate:
    """Parse and check an end-entity certificate; return it or raise :class:`Rejected`.

    Checks, in order: parsing, issuer name, signature by the anchor, validity at ``at``
    (default now, must be timezone-aware), that it is no CA, and its role (always a known
    role; ``expected_role`` if given).
    """
    if at is None:
        at = datetime.now(timezone.utc)
    elif at.tzinfo is None:
        raise ValueError("'at' must be timezone-aware")
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        cn = subject_common_name(cert)
        constraints = _basic_constraints(cert)
        key_usage = _key_usage(cert)
    except ValueError as exc:
        raise Rejected("malformed-certificate", f"cannot parse certificate: {exc}") from None

    _check_issuer(cert, cn, trust_anchor)
    if at < cert.not_valid_before_utc:
        when = cert.not_valid_before_utc.isoformat()
        raise Rejected("certificate-not-yet-valid", f"certificate {cn} is valid from {when}")
    if at > cert.not_valid_after_utc:
        when = cert.not_valid_after_utc.isoformat()
        raise Rejected("certificate-expired", f"certificate {cn} expired at {when}")
    if (constraints is not None and constraints.ca) or (
        key_usage is not None and key_usage.key_cert_sign
    ):
        raise Rejected("not-an-end-entity", f"certificate {cn} is a CA certificate")
    role = certificate_role(cert)
    if expected_role is not None and role is not Role(expected_role):
        raise Rejected(
            "wrong-role",
            f"certificate {cn} has role {role.value}, expected {Role(expected_role).value}",
        )
    return cert


def _check_issuer(cert: x509.Certificate, cn: str, anchor: x509.Certificate) -> None:
    if cert.issuer != anchor.subject:
        issuer = cert.issuer.rfc4514_string()
        raise Rejected("untrusted-issuer", f"certificate {cn} is issued by unknown {issuer}")
    if cert.issuer == cert.subject and cert.public_bytes(Encoding.DER) != anchor.public_bytes(
        Encoding.DER
    ):
        raise Rejected("untrusted-issuer", f"certificate {cn} is self-signed, not the anchor")
    try:
        cert.verify_directly_issued_by(anchor)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise Rejected(
            "bad-certificate-signature", f"certificate {cn} is not signed by the trust anchor"
        ) from None


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def verify_signature(cert: x509.Certificate, data: bytes, signature: bytes) -> None:
    """Check a DER ECDSA/SHA-256 ``signature`` over ``data`` by ``cert``'s key."""
    cn = subject_common_name(cert)
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise Rejected("unsupported-key", f"certificate {cn} has an unknown key type") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = type(public_key).__name__
        raise Rejected("unsupported-key", f"certificate {cn} has a {kind}, not an EC key")
    try:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise Rejected("bad-signature", f"signature does not verify with {cn}'s key") from None
