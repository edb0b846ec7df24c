"""Fixtures shared across test packages: the session's SoftHSM2 tokens (PKCS#11), a
headless Chromium (Playwright), and PostgreSQL (one server per session, a database per test).

The suite runs in two pytest-xdist workers (``make test``), a test file at a time per
worker. Each worker's own FHE work then gets one OpenMP thread: two workers with two
spinning threads each on two cores slow each other down many times over. Each worker takes
the ports of the clouds it starts from its own range (``$METROCLOUD_PORT_RANGE``). Rich draws
tables and wraps text at ``COLUMNS``; a fixed width keeps the CLI's output the same
whether or not pytest runs in a terminal.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # before anything loads OpenMP
    os.environ["OMP_NUM_THREADS"] = "1"
    # Each worker picks the ports of its clouds from a range of its own: a port chosen by
    # one worker and not yet bound by its service cannot be chosen by the other.
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _n = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    _size = (32_000 - 10_000) // max(_workers, 1)
    os.environ["METROCLOUD_PORT_RANGE"] = f"{10_000 + _n * _size}-{10_000 + (_n + 1) * _size - 1}"
os.environ["COLUMNS"] = "200"

import pytest

from browser import browser
from hsm_fixtures import hsm_store, hsm_token, softhsm
from postgres_fixture import backend, locations, postgres

__all__ = ["backend", "browser", "hsm_store", "hsm_token", "locations", "postgres", "softhsm"]

FIRST = ("anomaly", "scenarios", "tariffs", "fhe", "testbed", "receiver")
"""Test folders whose files take longest (clouds, FHE), run first: with the files shared
out in order, the workers then finish close together."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        parts = item.path.parts
        for n, folder in enumerate(FIRST):
            if folder in parts:
                return n
        return len(FIRST)

    items.sort(key=rank)  # stable: the order within a folder stays
