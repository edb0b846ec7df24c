"""Software identification of legally relevant code (WELMEC 7.2, OIML D 31).

A legally relevant component names the modules that hold its legally relevant code
(:class:`LegalComponent`). When a process loads it, the checksum is computed over the source
of exactly those modules, as imported: SHA-256 over ``name || 0x00 || source || 0x00`` for
each module in the declared order. The identification shown (:class:`SoftwareIdentification`)
is that load-time checksum with the component, software name, version and an instance id
unique to the running process.

Code outside the declared modules (the command line, the testbed, the cluster supervisor,
the broker's plumbing) is not legally relevant: changing it leaves every checksum as it
was. A declared module changed on disk after it was loaded no longer matches what runs:
:meth:`LoadedComponent.changed_modules` names it, and the running code is then unverifiable
until the component restarts.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SoftwareId:
    name: str
    version: str
    checksum: str  # SHA-256 over the source of the loaded module(s), hex

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "checksum": self.checksum}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> SoftwareId:
        return cls(name=d["name"], version=d["version"], checksum=d["checksum"])

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.checksum[:12]})"


def _source(name: str) -> bytes:
    module = sys.modules.get(name) or importlib.import_module(name)
    return Path(str(module.__file__)).read_bytes()


def _digest(sources: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, source in sources:
        h.update(name.encode() + b"\0" + source + b"\0")
    return h.hexdigest()


def module_checksum(*module_names: str) -> str:
    """SHA-256 over the source files of the given modules, in the given order (imported
    first if they are not yet)."""
    return _digest([(name, _source(name)) for name in module_names])


@dataclass(frozen=True)
class SoftwareIdentification:
    """What a running legally relevant component shows about itself."""

    component: str
    instance_id: str
    name: str
    version: str
    checksum: str

    @property
    def software(self) -> SoftwareId:
        return SoftwareId(self.name, self.version, self.checksum)

    def to_dict(self) -> dict[str, str]:
        return {
            "component": self.component,
            "instance_id": self.instance_id,
            **self.software.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> SoftwareIdentification:
        return cls(d["component"], d["instance_id"], d["name"], d["version"], d["checksum"])


@dataclass(frozen=True)
class LegalComponent:
    """A legally relevant component: its software name, version and legally relevant modules."""

    component: str
    name: str
    version: str
    modules: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.modules or len(set(self.modules)) != len(self.modules):
            raise ValueError(f"{self.component}: name its modules, each once")

    def load(self) -> LoadedComponent:
        """Import the modules (if not yet) and fix the checksum over their loaded source."""
        sources = {name: _source(name) for name in self.modules}
        return LoadedComponent(self, sources)


@dataclass(frozen=True)
class LoadedComponent:
    """A component as loaded in this process, with the source of each module at load time."""

    component: LegalComponent
    sources: dict[str, bytes]
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def identification(self) -> SoftwareIdentification:
        c = self.component
        checksum = _digest([(name, self.sources[name]) for name in c.modules])
        return SoftwareIdentification(c.component, self.instance_id, c.name, c.version, checksum)

    def changed_modules(self) -> list[str]:
        """The declared modules whose file on disk is no longer what was loaded."""
        changed = []
        for name, loaded in self.sources.items():
            try:
                now = Path(str(sys.modules[name].__file__)).read_bytes()
            except OSError:
                now = b""
            if now != loaded:
                changed.append(name)
        return changed
