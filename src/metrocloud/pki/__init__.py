"""Embedded PKI: a root CA created at first start, ECDSA P-256 identities, validation.

The full PKI (sub-CAs, CRLs, HSM through PKCS#11) replaces the embedded parts later behind
the same names: :class:`KeyStore` for keys, a trust anchor plus intermediates for validation.
"""

from metrocloud.pki.ca import CertificateAuthority
from metrocloud.pki.identity import Identity, IdentityStore
from metrocloud.pki.keys import (
    FileKeyStore,
    KeyFileError,
    KeyStore,
    generate_private_key,
    load_private_key,
    save_private_key,
)
from metrocloud.pki.pem import load_certificate, save_certificate
from metrocloud.pki.roles import Role
from metrocloud.pki.validate import (
    certificate_role,
    subject_common_name,
    verify_certificate,
    verify_signature,
)

__all__ = [
    "CertificateAuthority",
    "FileKeyStore",
    "Identity",
    "IdentityStore",
    "KeyFileError",
    "KeyStore",
    "Role",
    "certificate_role",
    "generate_private_key",
    "load_certificate",
    "load_private_key",
    "save_certificate",
    "save_private_key",
    "subject_common_name",
    "verify_certificate",
    "verify_signature",
]
