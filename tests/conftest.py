"""Fixtures shared across test packages: the session's SoftHSM2 tokens (PKCS#11), a
headless Chromium (Playwright), and PostgreSQL (one server per session, a database per test)."""

from browser import browser
from hsm_fixtures import hsm_store, hsm_token, softhsm
from postgres_fixture import backend, locations, postgres

__all__ = ["backend", "browser", "hsm_store", "hsm_token", "locations", "postgres", "softhsm"]
