from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metrocloud.bus.server import EmbeddedNatsServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    """A running server of its own in ``tmp_path``, stopped after the test."""
    srv = EmbeddedNatsServer(tmp_path / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
