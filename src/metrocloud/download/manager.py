"""The download manager: takes a manufacturer's update package, checks it, installs it.

One attempt runs these steps and stops at the first that fails:

1. the package itself (:func:`~metrocloud.download.package.open_package`): signed by a
   manufacturer certificate of the PKI, signature, expiry, every file's length and digest;
2. the component: legally relevant, run by a cloud service the manager may update, and the
   files replace only modules no other component declares (``outside-component``);
3. replay and downgrade: the metadata's sequence must exceed every sequence accepted for
   the component before (``replayed-metadata``), the version must exceed the running one
   (``rolled-back-version``);
4. staging: the files are written to a new release folder, completely or not at all
   (``failed``/``stage-failed``);
5. preflight: a fresh process loads the component with the staged release and computes its
   identification (``failed``/``preflight-failed`` if it cannot); it must be the one the
   metadata states (``identification-mismatch``) and be on the authority's signed reference
   list (``not-approved``);
6. switch: the component's pointer moves to the new release on trial and the service that
   runs it is told to switch (:class:`Switcher`); it finishes the messages it holds,
   acknowledges them and starts again on the new code, so the durable consumer hands the
   next message to the new code: none is lost and none is processed twice. The attempt is
   ``installed`` once the component answers with the new identification. Otherwise the
   pointer goes back and the service switches again: ``rolled-back`` when the old
   identification answers, ``failed`` (the component is out of service, and shows as such
   on the verification monitor) when nothing does.

Every attempt, refused or not, ends in one ``software-update`` logbook event: who pushed
it, the old and new identification, the result and why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from packaging.version import InvalidVersion, Version

from metrocloud.authority.reference import ReferenceList
from metrocloud.core.errors import Rejected
from metrocloud.core.events import LogEvent, UpdateResult, software_update_event
from metrocloud.core.software import SoftwareId
from metrocloud.download.installroot import InstallRoot, Release
from metrocloud.download.package import UpdatePackage, claimed, open_package
from metrocloud.download.preflight import PreflightFailed, identify
from metrocloud.pki.validate import TrustStore

_log = logging.getLogger(__name__)


class SwitchFailed(Exception):
    """The component did not come back with the identification asked for."""


class Switcher(Protocol):
    """Makes the service running a component start again on its current pointer."""

    async def switch(
        self,
        service: str,
        component: str,
        expected: SoftwareId,
        abandoned: Callable[[], bool] = ...,
    ) -> None:
        """Return once ``component`` answers from a new process with ``expected``;
        :class:`SwitchFailed` if it does not in time, or as soon as ``abandoned()``."""


@dataclass(frozen=True)
class InstallOutcome:
    """What became of one package."""

    result: UpdateResult
    component: str
    by: str
    old: SoftwareId | None
    new: SoftwareId | None
    reason: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "result": self.result,
            "component": self.component,
            "by": self.by,
            "old": None if self.old is None else self.old.to_dict(),
            "new": None if self.new is None else self.new.to_dict(),
            "reason": self.reason,
            "detail": self.detail,
        }


class _Stop(Exception):
    def __init__(self, result: UpdateResult, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.result, self.reason, self.detail = result, reason, detail


@dataclass(frozen=True)
class Installation:
    """What the manager needs to know about the installation it updates."""

    host_of: Callable[[str], str | None]
    """Component -> the service that runs it (None: not updatable here)."""
    exclusive_modules: Callable[[str], frozenset[str]]
    """Component -> the modules an update of it alone may replace."""


def _software(found: dict[str, str]) -> SoftwareId:
    return SoftwareId(found["name"], found["version"], found["checksum"])


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise _Stop("refused", "malformed-package", f"{text!r} is no version") from None


class DownloadManager:
    """Checks and installs update packages into one install root, one at a time."""

    def __init__(
        self,
        root: InstallRoot,
        trust: TrustStore,
        reference: Callable[[], ReferenceList | None],
        installation: Installation,
        log: Callable[[LogEvent], Awaitable[None]],
        *,
        switcher: Switcher | None = None,
        actor: str = "download",
    ) -> None:
        self.root = root
        self.trust = trust
        self.reference = reference
        self.installation = installation
        self.switcher = switcher
        self.actor = actor
        self._log_event = log
        self._lock = asyncio.Lock()

    async def receive(self, raw: bytes, *, at: datetime | None = None) -> InstallOutcome:
        """Check and install one package; the outcome is in the logbook before it returns."""
        async with self._lock:
            outcome = await self._attempt(raw, at)
            await self._log_event(
                software_update_event(
                    self.actor,
                    outcome.component,
                    outcome.old,
                    outcome.new,
                    outcome.result,
                    outcome.by,
                    None if outcome.result == "installed" else outcome.reason,
                )
            )
            _log.info("update of %s: %s %s", outcome.component, outcome.result, outcome.detail)
            return outcome

    async def _attempt(self, raw: bytes, at: datetime | None) -> InstallOutcome:
        try:
            package = open_package(raw, self.trust, at=at)
        except Rejected as exc:
            metadata, by = claimed(raw)
            component = metadata.component if metadata else self.actor
            new = metadata.software if metadata else None
            return InstallOutcome("refused", component, by, None, new, exc.reason, exc.detail)
        meta = package.metadata
        old: SoftwareId | None = None
        try:
            host = self._check_component(package)
            old = await self._running(meta.component)
            self._check_fresh(package, old)
            release = await self._stage(package)
            try:
                await self._check_release(package, release)
            except _Stop:
                self.root.discard(release)
                raise
            return await self._switch(package, host, release, old)
        except _Stop as stop:
            return InstallOutcome(
                stop.result,
                meta.component,
                package.manufacturer,
                old,
                meta.software,
                stop.reason,
                stop.detail,
            )

    def _check_component(self, package: UpdatePackage) -> str:
        component = package.metadata.component
        host = self.installation.host_of(component)
        if host is None:
            raise _Stop(
                "refused",
                "unknown-component",
                f"{component} is no component the download manager updates",
            )
        allowed = self.installation.exclusive_modules(component)
        outside = sorted(set(package.files) - allowed)
        if outside:
            raise _Stop(
                "refused",
                "outside-component",
                f"an update of {component} may not replace {', '.join(outside)}",
            )
        return host

    async def _running(self, component: str) -> SoftwareId:
        """The identification the component has now (as its next start would load it)."""
        try:
            return _software(await asyncio.to_thread(identify, self.root.root, component))
        except PreflightFailed as exc:
            raise _Stop("failed", "preflight-failed", str(exc)) from None

    def _check_fresh(self, package: UpdatePackage, old: SoftwareId) -> None:
        meta = package.metadata
        seen = self.highest_sequence(meta.component)
        if meta.sequence <= seen:
            raise _Stop(
                "refused",
                "replayed-metadata",
                f"metadata {meta.sequence} of {meta.component} is not newer than {seen}",
            )
        if _version(meta.version) <= _version(old.version):
            raise _Stop(
                "refused",
                "rolled-back-version",
                f"{meta.component} runs {old.version}; {meta.version} is not newer",
            )

    def highest_sequence(self, component: str) -> int:
        """The highest metadata sequence ever staged for ``component`` (0: none)."""
        folder = self.root.releases / component
        found = [0]
        if folder.is_dir():
            for release in folder.iterdir():
                head = release.name.split("-", 1)[0]
                if not release.name.startswith(".") and head.isdigit():
                    found.append(int(head))
        return max(found)

    async def _stage(self, package: UpdatePackage) -> Release:
        meta = package.metadata
        try:
            return await asyncio.to_thread(
                self.root.stage, meta.component, meta.version, meta.sequence, package.files
            )
        except (OSError, ValueError) as exc:
            raise _Stop("failed", "stage-failed", f"writing the release failed: {exc}") from None

    async def _check_release(self, package: UpdatePackage, release: Release) -> None:
        meta = package.metadata
        try:
            found = await asyncio.to_thread(identify, self.root.root, meta.component, release)
        except PreflightFailed as exc:
            raise _Stop("failed", "preflight-failed", str(exc)) from None
        new = _software(found)
        if new != meta.software:
            raise _Stop(
                "refused",
                "identification-mismatch",
                f"the metadata states {meta.software}, the code loads as {new}",
            )
        reference = self.reference()
        if reference is None:
            raise _Stop("refused", "no-reference-list", "the authority's list is not at hand")
        verdict = reference.verdict_of(meta.component, new)
        if not verdict.approved:
            raise _Stop("refused", "not-approved", verdict.detail)

    async def _switch(
        self, package: UpdatePackage, host: str, release: Release, old: SoftwareId
    ) -> InstallOutcome:
        meta = package.metadata

        def outcome(result: UpdateResult, reason: str | None, detail: str) -> InstallOutcome:
            return InstallOutcome(
                result, meta.component, package.manufacturer, old, meta.software, reason, detail
            )

        pointer = self.root.switch(meta.component, release, host)
        if self.switcher is None:
            return outcome("installed", None, "installed; runs from the component's next start")

        def abandoned() -> bool:  # the process went back to the old release by itself
            now = self.root.pointer(meta.component)
            return now is None or now.release != pointer.release

        try:
            await self.switcher.switch(host, meta.component, meta.software, abandoned)
        except SwitchFailed as exc:
            why = str(exc)
        else:
            return outcome("installed", None, f"{host} runs {meta.software}")
        self.root.revert(meta.component, pointer.release)
        try:
            await self.switcher.switch(host, meta.component, old)
        except SwitchFailed as exc:
            return outcome(
                "failed",
                "out-of-service",
                f"{why}; and the previous release did not come back: {exc}",
            )
        return outcome("rolled-back", "switch-failed", f"{why}; {host} runs {old} again")


def install_root(data: Path) -> InstallRoot:
    """The install root of the embedded cloud in data folder ``data``."""
    return InstallRoot(data / "software")
