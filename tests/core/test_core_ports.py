"""Free ports: never the same one twice from one process, and only from the given range."""

from __future__ import annotations

import socket

import pytest

from metrocloud.core import ports as ports_module
from metrocloud.core.errors import ConfigurationError
from metrocloud.core.ports import PORT_RANGE_ENV, free_port, port_range


@pytest.fixture(autouse=True)
def nothing_handed_out_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test as a fresh process: no port handed out before."""
    monkeypatch.setattr(ports_module, "_handed_out", set())


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_a_port_is_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 ports below the kernel's ephemeral range (where outgoing connections take theirs)
    monkeypatch.setenv(PORT_RANGE_ENV, "9100-9139")
    free = {p for p in range(9100, 9140) if bindable(p)}
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == 40
    assert {p for p in ports if 9100 <= p <= 9139} == free  # each free one, once
    # the range used up, the kernel chooses one outside it, still free and still new
    extra = free_port()
    assert extra not in ports and bindable(extra)


def test_a_port_in_use_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        monkeypatch.setenv(PORT_RANGE_ENV, f"{port}-{port}")
        assert free_port() != port


@pytest.mark.parametrize("given", ["10000", "a-b", "100-200", "30000-20000", "60000-70000"])
def test_a_bad_range_is_refused(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setenv(PORT_RANGE_ENV, given)
    with pytest.raises(ConfigurationError, match=PORT_RANGE_ENV):
        port_range()
