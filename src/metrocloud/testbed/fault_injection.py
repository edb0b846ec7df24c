"""The fault-taking subclasses of the cloud services (see :mod:`metrocloud.testbed.faulty`).

Imported by the boot step only after the install root is active, like any service module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from metrocloud.cloud.runtime import Handler, Service
from metrocloud.testbed.faulty import IN_PROCESS, fault_file_name

DELAY_S = 0.3
"""How long each store call waits under ``slow-storage``."""
LEAK_STEP = 8 * 1024 * 1024
LEAK_MAX = 2 * 1024 * 1024 * 1024
POLL_S = 0.25

_log = logging.getLogger(__name__)


def give_back_memory() -> None:
    """Return freed heap memory to the system (glibc keeps it otherwise, and the process
    would look as big as at the height of the leak)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class SlowStore:
    """A store whose every call waits first, while ``slow()`` says so."""

    def __init__(self, inner: Any, slow: Callable[[], bool]) -> None:
        self._inner = inner
        self._slow = slow

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if not callable(found):
            return found

        @functools.wraps(found)
        def delayed(*args: Any, **kwargs: Any) -> Any:
            if self._slow():
                time.sleep(DELAY_S)
            return found(*args, **kwargs)

        return delayed


class FaultInjection(Service):
    """Mixed in before a service's class: watches the fault file and plays the fault."""

    _fault: str | None = None
    _hog: threading.Thread | None = None
    _leak: list[bytes]

    @property
    def instance(self) -> str:
        """This process's name (its fault file): ``legal-2`` among workers, else the service."""
        return self.options.get("name", self.name)

    @property
    def store(self) -> Any:
        inner = Service.store.__get__(self)  # the certified store, opened once
        return SlowStore(inner, lambda: self._fault == "slow-storage")

    async def serve(self) -> None:
        self._leak = []
        watcher = asyncio.ensure_future(self._watch())
        try:
            await super().serve()  # type: ignore[safe-super]  # the service's own
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._set(None)

    async def consume(self, durable: str, handler: Handler, batch: int = 8) -> None:
        async def held(msg: Any) -> None:
            while self._fault == "stall" and not self.stopping:
                await asyncio.sleep(POLL_S)
            await handler(msg)

        await super().consume(durable, held, batch)

    async def _watch(self) -> None:
        path = self.data.run / fault_file_name(self.instance)
        while not self.stopping:
            self._set(self._read(path))
            if self._fault == "memory-leak" and sum(map(len, self._leak)) < LEAK_MAX:
                self._leak.append(b"\x5a" * LEAK_STEP)  # written, so resident
            await asyncio.sleep(POLL_S if self._fault != "memory-leak" else 0.5)

    @staticmethod
    def _read(path: Any) -> str | None:
        try:
            order = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(order, dict) or float(order.get("until", 0)) < time.time():
            return None
        fault = order.get("fault")
        return fault if fault in IN_PROCESS else None

    def _set(self, fault: str | None) -> None:
        if fault == self._fault:
            return
        _log.warning("%s: fault %s -> %s", self.instance, self._fault, fault)
        self._fault = fault
        if fault != "memory-leak" and self._leak:
            self._leak = []
            give_back_memory()
        if fault == "cpu-hog" and self._hog is None:
            self._hog = threading.Thread(target=self._burn, daemon=True)
            self._hog.start()
        elif fault != "cpu-hog":
            self._hog = None  # the thread sees it and ends

    def _burn(self) -> None:
        block = b"\x00" * (1 << 20)
        while self._fault == "cpu-hog":
            hashlib.sha256(block).digest()


@functools.cache
def faulty_class(service: str) -> type[Service]:
    """The fault-taking subclass of ``service``'s class."""
    from metrocloud.cloud.serve import service_class

    base = service_class(service)
    return type(f"Faulty{base.__name__}", (FaultInjection, base), {"__module__": __name__})


def __getattr__(name: str) -> type[Service]:
    """``faulty_<service>``: the class :func:`main` names to the boot step."""
    if name.startswith("faulty_"):
        return faulty_class(name.removeprefix("faulty_"))
    raise AttributeError(name)
