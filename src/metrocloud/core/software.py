"""Software identification of legally relevant code: name, version, checksum."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
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


def module_checksum(*module_names: str) -> str:
    """SHA-256 over the source files of already imported modules, in the given order."""
    h = hashlib.sha256()
    for name in module_names:
        module = sys.modules[name]
        path = Path(str(module.__file__))
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()
