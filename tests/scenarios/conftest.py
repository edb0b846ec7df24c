"""A running embedded cloud per test, in its own data folder on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metrocloud.cloud.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data")
    c.start()
    try:
        yield c
    finally:
        c.stop()
