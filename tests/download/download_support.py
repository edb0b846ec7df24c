"""Helpers of the download tests: real tariff sources, identifications, hand-made metadata.

Imported by the test modules of this folder (pytest puts the folder on ``sys.path``).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from metrocloud.core.messages import Envelope, Signer
from metrocloud.core.software import SoftwareId
from metrocloud.download.build import expected_identification
from metrocloud.download.installroot import InstallRoot, Release
from metrocloud.download.package import PackageFile, PackageMetadata, build_package, unpack

MAKER = "acme-meters"
"""The manufacturer whose packages the cloud installs."""
TAF1 = "metrocloud.tariffs.taf1"
TAF2 = "metrocloud.tariffs.taf2"
SCHEDULE = "metrocloud.tariffs.schedule"
BASE = "metrocloud.tariffs.base"
TAF1_COMPONENT = "tariff-taf1"
TAF2_COMPONENT = "tariff-taf2"
TAF1_NAME = "metrocloud-tariff-taf1"
INSTALLED_VERSION = "2.0.0"
"""The version the tariff programs state in the installed code."""


def origin(module: str) -> Path:
    """The installed file of ``module`` (found, not imported)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def source_of(module: str) -> bytes:
    """The installed source of ``module``."""
    return origin(module).read_bytes()


def with_version(module: str, version: str, extra: bytes = b"") -> bytes:
    """``module``'s source stating ``version`` instead of the installed one, plus ``extra``."""
    source = source_of(module)
    old = f'version = "{INSTALLED_VERSION}"'.encode()
    assert source.count(old) == 1, f"{module} does not state its version as expected"
    return source.replace(old, f'version = "{version}"'.encode()) + extra


def taf1_files(version: str, extra: bytes = b"") -> dict[str, bytes]:
    """A taf1 release: its one exclusive module, stating ``version``."""
    return {TAF1: with_version(TAF1, version, extra)}


def taf2_files(version: str) -> dict[str, bytes]:
    """A taf2 release of both of its exclusive modules (the switching table gains a
    comment), so that staging writes two files."""
    return {
        SCHEDULE: source_of(SCHEDULE) + f"\n# switching table of taf2 {version}\n".encode(),
        TAF2: with_version(TAF2, version),
    }


@cache
def _identification(
    component: str, version: str, files: tuple[tuple[str, bytes], ...]
) -> SoftwareId:
    found = expected_identification(component, version, dict(files))
    assert found["component"] == component
    return SoftwareId(found["name"], found["version"], found["checksum"])


def identification(component: str, version: str, files: dict[str, bytes]) -> SoftwareId:
    """What ``component`` shows once ``files`` replace its modules, computed as the
    manufacturer's build does (staged in a scratch root, loaded by a fresh process)."""
    return _identification(component, version, tuple(sorted(files.items())))


def checksum_over(component_modules: tuple[str, ...], files: dict[str, bytes]) -> str:
    """The load-time checksum (:mod:`metrocloud.core.software`) of a component whose
    modules are the installed ones except ``files``: for code no process can load."""
    h = hashlib.sha256()
    for name in component_modules:
        source = files.get(name)
        h.update(name.encode() + b"\0" + (source_of(name) if source is None else source) + b"\0")
    return h.hexdigest()


def moment(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(timezone.utc).replace(microsecond=0) + offset).isoformat()


def metadata(
    software: SoftwareId,
    files: dict[str, bytes],
    sequence: int,
    *,
    component: str = TAF1_COMPONENT,
    issued_at: str | None = None,
    expires: str | None = None,
    listed: dict[str, bytes] | None = None,
) -> PackageMetadata:
    """Metadata stating ``software`` for ``files`` (or for ``listed``, when the files the
    metadata names are to differ from those shipped)."""
    return PackageMetadata(
        component=component,
        name=software.name,
        version=software.version,
        sequence=sequence,
        issued_at=issued_at or moment(-timedelta(minutes=1)),
        expires=expires or moment(timedelta(days=30)),
        checksum=software.checksum,
        files=tuple(PackageFile.of(m, s) for m, s in (listed or files).items()),
    )


def package(
    signer: Signer,
    software: SoftwareId,
    files: dict[str, bytes],
    sequence: int,
    *,
    component: str = TAF1_COMPONENT,
    issued_at: str | None = None,
    expires: str | None = None,
) -> bytes:
    """A package of ``files`` whose metadata, signed by ``signer``, states ``software``."""
    meta = metadata(
        software, files, sequence, component=component, issued_at=issued_at, expires=expires
    )
    return build_package(signer, meta, files)


def opened_metadata(raw: bytes) -> tuple[Envelope, PackageMetadata, dict[str, bytes]]:
    """The parts of a package (not checked)."""
    metadata_raw, files = unpack(raw)
    envelope = Envelope.decode(metadata_raw)
    return envelope, PackageMetadata.decode(envelope.body), files


def tree(root: InstallRoot) -> dict[str, bytes]:
    """Every file under the install root (relative path -> content), hidden ones included:
    a snapshot to show that nothing was written, switched or left behind."""
    if not root.root.exists():
        return {}
    return {
        str(p.relative_to(root.root)): p.read_bytes()
        for p in sorted(root.root.rglob("*"))
        if p.is_file()
    }


def release_names(root: InstallRoot, component: str) -> list[str]:
    """The entries of ``component``'s release folder, hidden ones (staging) included."""
    folder = root.releases / component
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def release_file(release: Release, module: str) -> bytes:
    return release.path(module).read_bytes()


class FullDisk(InstallRoot):
    """An install root whose disk fills up at the ``fail_at``-th file written (0: never)."""

    def __init__(self, root: Path, fail_at: int) -> None:
        super().__init__(root)
        self.fail_at = fail_at
        self.written: list[str] = []

    def write_file(self, path: Path, data: bytes) -> None:
        if len(self.written) + 1 == self.fail_at:
            self.fail_at = -1  # one full disk is enough: retries find room
            path.write_bytes(data[: len(data) // 2])  # a part made it to disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        super().write_file(path, data)
        self.written.append(path.name)
