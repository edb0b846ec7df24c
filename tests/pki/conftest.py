"""Fixtures of the PKI tests: every key is generated at test time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.pki import CertificateAuthority, generate_private_key, load_private_key

BuildCert = Callable[..., x509.Certificate]


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


@pytest.fixture
def ca(ca_dir: Path) -> CertificateAuthority:
    return CertificateAuthority.create(ca_dir)


@pytest.fixture
def ca_key(ca: CertificateAuthority, ca_dir: Path) -> ec.EllipticCurvePrivateKey:
    return load_private_key(ca_dir / "ca.key")


@pytest.fixture
def build_cert(ca: CertificateAuthority, ca_key: ec.EllipticCurvePrivateKey) -> BuildCert:
    """Build a certificate by hand; by default an end entity signed by ``ca``."""

    def build(
        subject: x509.Name,
        *,
        issuer: x509.Name | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        public_key: ec.EllipticCurvePublicKey | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        is_ca: bool = False,
    ) -> x509.Certificate:
        now = datetime.now(timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or ca.certificate.subject)
            .public_key(public_key or generate_private_key().public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(minutes=1))
            .not_valid_after(not_after or now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .sign(signing_key or ca_key, hashes.SHA256())
        )

    return build
