"""Fixtures of the download tests: a real PKI per test module and its manufacturer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from download_support import MAKER

from metrocloud.pki import Identity, IdentityStore, Pki, Role, TrustStore


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityStore]:
    store = IdentityStore.open_local(tmp_path_factory.mktemp("download-pki"))
    yield store
    assert store.pki is not None
    store.pki.close()


@pytest.fixture(scope="module")
def pki(ids: IdentityStore) -> Pki:
    assert ids.pki is not None
    return ids.pki


@pytest.fixture(scope="module")
def maker(ids: IdentityStore) -> Identity:
    """The manufacturer whose packages the cloud installs."""
    return ids.identity(MAKER, Role.MANUFACTURER)


@pytest.fixture(scope="module")
def trust(pki: Pki, maker: Identity) -> TrustStore:
    """The PKI's trust store with the CRLs current when the manufacturer was issued."""
    return pki.trust_store()
