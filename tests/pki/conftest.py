"""Fixtures of the PKI tests: every key is generated at test time, CA keys in clear files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pki_support import ALL_BRAINPOOL, make_pki

from metrocloud.pki import Curve, Pki, TrustStore


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    """A default hierarchy shared by a test module: never revoke a sub-CA in it."""
    authority = make_pki(tmp_path_factory.mktemp("pki"))
    yield authority
    authority.close()


@pytest.fixture(scope="module")
def brainpool_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    """A hierarchy on brainpoolP256r1 only (root and every sub-CA), shared by a module."""
    authority = make_pki(
        tmp_path_factory.mktemp("brainpool-pki"),
        root_curve=Curve.BRAINPOOL_P256R1,
        ca_curves=ALL_BRAINPOOL,
    )
    yield authority
    authority.close()


@pytest.fixture
def fresh_pki(tmp_path: Path) -> Iterator[Pki]:
    """A default hierarchy of the test's own, for what would spoil a shared one."""
    authority = make_pki(tmp_path)
    yield authority
    authority.close()


@pytest.fixture
def trust(pki: Pki) -> TrustStore:
    """The shared PKI's trust store with its current CRLs."""
    return pki.trust_store()
