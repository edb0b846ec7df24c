"""Fixtures shared across test packages: the session's SoftHSM2 tokens (PKCS#11) and a
headless Chromium (Playwright)."""

from browser import browser
from hsm_fixtures import hsm_store, hsm_token, softhsm

__all__ = ["browser", "hsm_store", "hsm_token", "softhsm"]
