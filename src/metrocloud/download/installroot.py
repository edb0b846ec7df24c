"""Where installed updates live, and how a process loads them (standard library only).

The install root (``<data>/software``) holds one folder per release a download manager
accepted and one pointer per updated component::

    releases/<component>/<sequence>-<version>/   the module files, as shipped
        <module>.py                                   e.g. metrocloud.tariffs.taf1.py
        release.json                                  component, version, sequence, modules
    active/<component>.json                      which release runs, and the one before it

A pointer is replaced in one ``rename``: a component runs either the old release or the new
one, never a mix. A new pointer is a *trial* until the download manager has seen the
component answer with the new identification; a process whose start fails while one of its
components is on trial puts the pointer back to the previous release and starts again (the
A/B scheme of embedded updaters). See :mod:`metrocloud.cloud.boot`.

A process calls :func:`activate` before importing any legally relevant module: from then on
each module of an active release is imported from the release's file, so the checksum of
the loaded code (:mod:`metrocloud.core.software`) covers the file that actually runs.

This module imports nothing of metrocloud, so it can be activated before anything else.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

TRIAL: Literal["trial"] = "trial"
COMMITTED: Literal["committed"] = "committed"
PointerState = Literal["trial", "committed"]

_MODULE = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+")
_COMPONENT = re.compile(r"[a-z][a-z0-9-]{0,62}")


class InstallRootError(Exception):
    """The install root is not as this module writes it."""


def module_file(module: str) -> str:
    """The file name a module is kept under in a release folder."""
    if not _MODULE.fullmatch(module):
        raise ValueError(f"{module!r} is no dotted module name")
    return f"{module}.py"


@dataclass(frozen=True)
class Release:
    """One accepted release of one component: what ``release.json`` says."""

    component: str
    version: str
    sequence: int
    modules: tuple[str, ...]
    folder: Path

    def path(self, module: str) -> Path:
        return self.folder / module_file(module)

    def manifest(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "version": self.version,
            "sequence": self.sequence,
            "modules": list(self.modules),
        }


@dataclass(frozen=True)
class Pointer:
    """Which release of a component runs (``release``), and the one it replaced."""

    release: str
    """Folder name under ``releases/<component>/``."""
    previous: str | None
    """The release before, or None for the code shipped with the installation."""
    state: PointerState
    host: str
    """The service whose process runs the component."""


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, rename over ``path``, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InstallRoot:
    """The releases and pointers under one folder (``<data>/software``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def active(self) -> Path:
        return self.root / "active"

    # -- pointers -----------------------------------------------------------------
    def _pointer_path(self, component: str) -> Path:
        if not _COMPONENT.fullmatch(component):
            raise ValueError(f"{component!r} is no component name")
        return self.active / f"{component}.json"

    def pointer(self, component: str) -> Pointer | None:
        """The component's pointer, or None while it runs the code it was installed with."""
        try:
            raw = self._pointer_path(component).read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            pointer = Pointer(data["release"], data["previous"], data["state"], data["host"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InstallRootError(f"pointer of {component} is unreadable: {exc}") from None
        if pointer.state not in (TRIAL, COMMITTED):
            raise InstallRootError(f"pointer of {component} has state {pointer.state!r}")
        names = (pointer.release, pointer.host, pointer.previous or "-")
        if not all(isinstance(n, str) and n for n in names):
            raise InstallRootError(f"pointer of {component} names no release or host")
        return pointer

    def set_pointer(self, component: str, pointer: Pointer | None) -> None:
        """Make ``pointer`` current in one rename (None: back to the installed code)."""
        path = self._pointer_path(component)
        if pointer is None:
            if path.exists():
                path.unlink()
                _fsync_folder(path.parent)
            return
        self.active.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, json.dumps(asdict(pointer), sort_keys=True).encode())

    def switch(self, component: str, release: Release, host: str) -> Pointer:
        """Point ``component`` (run by service ``host``) at ``release`` on trial, keeping
        the release it replaces."""
        before = self.pointer(component)
        previous = None if before is None else before.release
        pointer = Pointer(release.folder.name, previous, TRIAL, host)
        self.set_pointer(component, pointer)
        return pointer

    def on_trial(self, host: str) -> list[str]:
        """The components run by ``host`` whose pointer is on trial."""
        found = []
        for component in self.components():
            pointer = self.pointer(component)
            if pointer is not None and pointer.state == TRIAL and pointer.host == host:
                found.append(component)
        return found

    def commit(self, component: str) -> None:
        """The release on trial started well: keep it."""
        pointer = self.pointer(component)
        if pointer is not None and pointer.state == TRIAL:
            kept = Pointer(pointer.release, pointer.previous, COMMITTED, pointer.host)
            self.set_pointer(component, kept)

    def revert(self, component: str, release: str | None = None) -> bool:
        """Put ``component`` back to its previous release if it is on trial, or if it runs
        release ``release`` (trial or not); False if neither holds."""
        pointer = self.pointer(component)
        if pointer is None or (pointer.state != TRIAL and pointer.release != release):
            return False
        back = None
        if pointer.previous is not None:
            back = Pointer(pointer.previous, None, COMMITTED, pointer.host)
        self.set_pointer(component, back)
        return True

    def components(self) -> list[str]:
        """Components with a pointer."""
        if not self.active.is_dir():
            return []
        return sorted(p.stem for p in self.active.glob("*.json"))

    # -- releases -----------------------------------------------------------------
    def release(self, component: str, name: str) -> Release:
        folder = self.releases / component / name
        try:
            data = json.loads((folder / "release.json").read_bytes())
            release = Release(
                data["component"],
                data["version"],
                int(data["sequence"]),
                tuple(data["modules"]),
                folder,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InstallRootError(f"release {component}/{name} is unreadable: {exc}") from None
        if release.component != component:
            raise InstallRootError(f"release {component}/{name} names {release.component}")
        return release

    def current(self, component: str) -> Release | None:
        """The release the component runs (or is to run), None for the installed code."""
        pointer = self.pointer(component)
        return None if pointer is None else self.release(component, pointer.release)

    def stage(
        self, component: str, version: str, sequence: int, files: dict[str, bytes]
    ) -> Release:
        """Write a release folder completely, then move it into place.

        The files go to a hidden folder first, each fsynced; only a complete folder is
        renamed to its final name. A failure on the way (a full disk, say) leaves no
        release behind, only the hidden folder, which the next stage removes.
        """
        name = f"{sequence}-{version}"
        if len(name) > 80 or not re.fullmatch(r"[0-9]+-[0-9A-Za-z.+_][0-9A-Za-z.+_-]*", name):
            raise ValueError(f"version {version!r} cannot name a folder")
        parent = self.releases / component
        parent.mkdir(parents=True, exist_ok=True)
        final = parent / name
        staging = parent / f".staging-{name}"
        if staging.exists():
            _remove_tree(staging)
        if final.exists():
            raise InstallRootError(f"release {component}/{name} exists already")
        staging.mkdir()
        try:
            for module, source in files.items():
                self.write_file(staging / module_file(module), source)
            release = Release(component, version, sequence, tuple(files), final)
            self.write_file(staging / "release.json", json.dumps(release.manifest()).encode())
            _fsync_folder(staging)
            os.rename(staging, final)
            _fsync_folder(parent)
        except BaseException:
            _remove_tree(staging)
            raise
        return release

    def write_file(self, path: Path, data: bytes) -> None:
        with path.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def discard(self, release: Release) -> None:
        """Remove a release folder no pointer names."""
        _remove_tree(release.folder)

    def overlay(self, substitute: Release | None = None) -> dict[str, Path]:
        """Module name -> file for every active release (``substitute`` in place of the
        release of its component)."""
        found: dict[str, Path] = {}
        releases = [self.current(c) for c in self.components()]
        if substitute is not None:
            releases = [r for r in releases if r and r.component != substitute.component]
            releases.append(substitute)
        for release in releases:
            if release is not None:
                for module in release.modules:
                    found[module] = release.path(module)
        return found

    def versions(self, substitute: Release | None = None) -> dict[str, str]:
        """Component -> version of each active release (``substitute`` included)."""
        found = {c: r.version for c in self.components() if (r := self.current(c))}
        if substitute is not None:
            found[substitute.component] = substitute.version
        return found


def _remove_tree(folder: Path) -> None:
    if not folder.exists():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    folder.rmdir()


class ReleaseFinder(importlib.abc.MetaPathFinder):
    """Imports the modules of active releases from their release files."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = dict(files)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(fullname, file)


_ACTIVE: dict[str, str] = {}
"""Component -> version of the releases activated in this process."""


def activate(root: InstallRoot, substitute: Release | None = None) -> dict[str, Path]:
    """Load the modules of the active releases from ``root`` in this process from now on.

    Call before the modules are first imported; a module imported already is not replaced
    (``ImportError`` names it, since the process would run code other than it shows).
    """
    files = root.overlay(substitute)
    early = sorted(m for m in files if m in sys.modules)
    if early:
        raise ImportError(f"imported before the releases were activated: {', '.join(early)}")
    sys.meta_path.insert(0, ReleaseFinder(files))
    _ACTIVE.update(root.versions(substitute))
    return files


def active_version(component: str) -> str | None:
    """The version of ``component``'s activated release in this process, if any."""
    return _ACTIVE.get(component)
