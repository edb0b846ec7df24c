"""SoftHSM2 tokens for tests: one configuration per test session, tokens made up front.

A process loads a PKCS#11 module once, and SoftHSM2 reads ``SOFTHSM2_CONF`` and scans its
token directory only then: tokens created later are invisible to the process. So the
session fixture :func:`softhsm` sets ``SOFTHSM2_CONF`` and creates every token the tests use
(:data:`TOKEN_LABELS`) before anything loads the module. It must therefore be the first thing
in the test process to load SoftHSM2.

- :func:`softhsm` (session): the configuration and its tokens, as :class:`SoftHsm`.
- :func:`hsm_token` (function): the main token, emptied after each test.
- :func:`hsm_store` (function): a :class:`Pkcs11KeyStore` open on it, closed after the test.
- :func:`token_session`: a plain python-pkcs11 session, to look at objects without our code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest

from metrocloud.pki.pkcs11 import (
    MODULE_ENV,
    Pkcs11KeyStore,
    find_pkcs11_module,
    init_softhsm_token,
)

USER_PIN = "user-pin-2026"
SO_PIN = "so-pin-2026"
MAIN_TOKEN = "metrocloud-test"
SPARE_TOKEN = "metrocloud-spare"
"""Never kept open by a fixture: for tests that need a token no session is logged in to."""
CA_TOKEN = "metrocloud-ca"
"""For the tests that keep a whole PKI's CA keys in the HSM (one module uses it)."""
TOKEN_LABELS = (MAIN_TOKEN, SPARE_TOKEN, CA_TOKEN)


@dataclass(frozen=True)
class HsmToken:
    """One SoftHSM2 token: where its module is and how to log in."""

    module: Path
    conf: Path
    label: str
    user_pin: str = USER_PIN
    so_pin: str = SO_PIN

    def open(self) -> Pkcs11KeyStore:
        return Pkcs11KeyStore(self.module, self.label, self.user_pin)


@dataclass(frozen=True)
class SoftHsm:
    """The test session's SoftHSM2 configuration and its tokens by label."""

    module: Path
    conf: Path
    tokens: dict[str, HsmToken]


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(MODULE_ENV, raising=False)  # always SoftHSM2, even where an HSM is configured
        module = find_pkcs11_module()
        conf_dir = tmp_path_factory.mktemp("softhsm")
        conf = conf_dir / "softhsm2.conf"
        for label in TOKEN_LABELS:
            conf = init_softhsm_token(conf_dir, label, USER_PIN, SO_PIN)
        mp.setenv("SOFTHSM2_CONF", str(conf))
        tokens = {label: HsmToken(module, conf, label) for label in TOKEN_LABELS}
        visible = [t.label for t in _lib(module).get_tokens()]
        missing = [label for label in TOKEN_LABELS if label not in visible]
        if missing:
            pytest.fail(
                f"SoftHSM2 tokens {missing} are not visible (visible: {visible}): the module was "
                "loaded in this process before the softhsm fixture set SOFTHSM2_CONF. Request "
                "the softhsm fixture (or make it autouse) before anything loads SoftHSM2."
            )
        yield SoftHsm(module, conf, tokens)


@pytest.fixture
def hsm_token(softhsm: SoftHsm) -> Iterator[HsmToken]:
    token = softhsm.tokens[MAIN_TOKEN]
    yield token
    empty_token(token)


@pytest.fixture
def hsm_store(hsm_token: HsmToken) -> Iterator[Pkcs11KeyStore]:
    with hsm_token.open() as store:
        yield store


def _lib(module: Path) -> Any:
    """python-pkcs11's handle on the module, under the real path our key store loads it by."""
    return pkcs11.lib(os.path.realpath(module))


@contextmanager
def token_session(token: HsmToken) -> Iterator[Any]:
    """A plain python-pkcs11 read/write session on ``token``, logged in.

    Our store keeps the process logged in while it is open; a plain session shares that login
    (PKCS#11 login state is per process and token) and, not having logged in itself, does not
    log the store out when it closes.
    """
    with token.open():
        session = _lib(token.module).get_token(token_label=token.label).open(rw=True)
        try:
            yield session
        finally:
            session.close()


def empty_token(token: HsmToken) -> None:
    """Destroy every object on ``token``."""
    with token_session(token) as session:
        for obj in list(session.get_objects()):
            obj.destroy()
