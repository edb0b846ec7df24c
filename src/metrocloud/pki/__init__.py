"""metrocloud's PKI: a root CA, five sub-CAs, role profiles, CRLs, keys in files or an HSM.

- :mod:`.keys`: :class:`SigningKey` and :class:`KeyStore`, encrypted PKCS#8 files;
  :mod:`.pkcs11` keeps keys in a PKCS#11 token instead.
- :mod:`.roles`: roles, sub-CAs and each role's certificate profile.
- :mod:`.authority`: :class:`Pki`, the CA side (issue, revoke, CRLs).
- :mod:`.validate`: :class:`TrustStore`, the verifier side (chain, CRLs, role).
- :mod:`.identity`: identities (key plus chain) of gateways, services and customers.
"""

from metrocloud.pki.authority import Pki
from metrocloud.pki.identity import Identity, IdentityStore
from metrocloud.pki.keys import (
    Curve,
    FileKeyStore,
    KeyFileError,
    KeyStore,
    SigningKey,
    SoftwareKey,
    generate_private_key,
    load_private_key,
    save_private_key,
)
from metrocloud.pki.pem import load_certificate, save_certificate
from metrocloud.pki.roles import PROFILES, Role, SubCa
from metrocloud.pki.validate import (
    TrustStore,
    certificate_role,
    subject_common_name,
    verify_signature,
)

__all__ = [
    "PROFILES",
    "Curve",
    "FileKeyStore",
    "Identity",
    "IdentityStore",
    "KeyFileError",
    "KeyStore",
    "Pki",
    "Role",
    "SigningKey",
    "SoftwareKey",
    "SubCa",
    "TrustStore",
    "certificate_role",
    "generate_private_key",
    "load_certificate",
    "load_private_key",
    "save_certificate",
    "save_private_key",
    "subject_common_name",
    "verify_signature",
]
