"""Fixtures shared across test packages: the session's SoftHSM2 tokens (PKCS#11)."""

from hsm_fixtures import hsm_store, hsm_token, softhsm

__all__ = ["hsm_store", "hsm_token", "softhsm"]
