"""The install root: releases staged completely or not at all, pointers switched in one
rename, trial/commit/revert, and a process that loads its modules from the releases."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from download_support import (
    BASE,
    SCHEDULE,
    TAF1,
    TAF1_COMPONENT,
    TAF2,
    TAF2_COMPONENT,
    FullDisk,
    origin,
    release_file,
    release_names,
    source_of,
    taf1_files,
    taf2_files,
    tree,
)

from metrocloud.download.installroot import (
    COMMITTED,
    TRIAL,
    InstallRoot,
    InstallRootError,
    Pointer,
    Release,
    module_file,
)
from metrocloud.download.preflight import PreflightFailed, identify

MARKER = b'\nRELEASE_MARKER = "loaded from the release"\n'


@pytest.fixture
def root(tmp_path: Path) -> InstallRoot:
    return InstallRoot(tmp_path / "software")


def staged(root: InstallRoot, version: str, sequence: int, extra: bytes = b"") -> Release:
    return root.stage(TAF1_COMPONENT, version, sequence, taf1_files(version, extra))


# -- staging ------------------------------------------------------------------------------------
def test_stage_writes_the_files_and_the_manifest(root: InstallRoot) -> None:
    files = taf2_files("2.1.0")
    release = root.stage(TAF2_COMPONENT, "2.1.0", 3, files)
    assert release.folder == root.releases / TAF2_COMPONENT / "3-2.1.0"
    assert (release.component, release.version, release.sequence) == (TAF2_COMPONENT, "2.1.0", 3)
    assert set(release.modules) == {SCHEDULE, TAF2}
    for module, source in files.items():
        assert release_file(release, module) == source
        assert release.path(module).name == f"{module}.py"
    assert root.release(TAF2_COMPONENT, "3-2.1.0") == release
    assert sorted(p.name for p in release.folder.iterdir()) == sorted(
        [module_file(SCHEDULE), module_file(TAF2), "release.json"]
    )
    assert root.pointer(TAF2_COMPONENT) is None  # staging switches nothing
    assert root.current(TAF2_COMPONENT) is None


@pytest.mark.parametrize("fail_at", [1, 2, 3], ids=["first-file", "second-file", "manifest"])
def test_stage_is_all_or_nothing(tmp_path: Path, fail_at: int) -> None:
    folder = tmp_path / "software"
    before = InstallRoot(folder)
    running = before.stage(TAF2_COMPONENT, "2.1.0", 1, taf2_files("2.1.0"))
    before.switch(TAF2_COMPONENT, running, "legal")
    snapshot = tree(before)
    full = FullDisk(folder, fail_at)
    with pytest.raises(OSError) as info:
        full.stage(TAF2_COMPONENT, "2.2.0", 2, taf2_files("2.2.0"))
    assert info.value.errno == errno.ENOSPC
    assert len(full.written) == fail_at - 1
    assert release_names(full, TAF2_COMPONENT) == ["1-2.1.0"]  # no release, no staging left
    assert tree(full) == snapshot
    assert full.pointer(TAF2_COMPONENT) == Pointer("1-2.1.0", None, TRIAL, "legal")
    # the name is not burnt: with room on the disk the same release stages
    again = InstallRoot(folder).stage(TAF2_COMPONENT, "2.2.0", 2, taf2_files("2.2.0"))
    assert release_file(again, TAF2) == taf2_files("2.2.0")[TAF2]


def test_a_failing_rename_leaves_nothing_behind(
    root: InstallRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rename(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "rename", no_rename)  # the rename into place
    with pytest.raises(OSError):
        staged(root, "2.1.0", 1)
    assert release_names(root, TAF1_COMPONENT) == []


def test_staging_left_by_a_crash_is_cleared_by_the_next_stage(root: InstallRoot) -> None:
    leftover = root.releases / TAF1_COMPONENT / ".staging-1-2.1.0"
    (leftover / "junk").mkdir(parents=True)
    (leftover / "junk" / "half.py").write_bytes(b"x =")
    (leftover / f"{TAF1}.py").write_bytes(b"half a file")
    release = staged(root, "2.1.0", 1)
    assert release_names(root, TAF1_COMPONENT) == ["1-2.1.0"]
    assert release_file(release, TAF1) == taf1_files("2.1.0")[TAF1]
    assert sorted(p.name for p in release.folder.iterdir()) == [f"{TAF1}.py", "release.json"]


def test_a_release_is_staged_once(root: InstallRoot) -> None:
    first = staged(root, "2.1.0", 1)
    with pytest.raises(InstallRootError, match="exists already"):
        staged(root, "2.1.0", 1, extra=b"# something else\n")
    assert release_file(first, TAF1) == taf1_files("2.1.0")[TAF1]
    assert release_names(root, TAF1_COMPONENT) == ["1-2.1.0"]


@pytest.mark.parametrize("version", ["../2.1.0", "2.1.0/x", "2 1", "x" * 79, "", "-1"])
def test_a_version_that_cannot_name_a_folder_is_refused(root: InstallRoot, version: str) -> None:
    with pytest.raises(ValueError):
        root.stage(TAF1_COMPONENT, version, 1, {TAF1: b""})
    assert not root.root.exists() or tree(root) == {}


def test_a_module_name_that_is_no_module_is_refused(root: InstallRoot) -> None:
    with pytest.raises(ValueError):
        root.stage(TAF1_COMPONENT, "2.1.0", 1, {TAF1: b"", "../../evil": b""})
    assert release_names(root, TAF1_COMPONENT) == []


def test_discard_removes_a_release(root: InstallRoot) -> None:
    kept, gone = staged(root, "2.1.0", 1), staged(root, "2.2.0", 2)
    root.discard(gone)
    assert release_names(root, TAF1_COMPONENT) == [kept.folder.name]


# -- pointers -----------------------------------------------------------------------------------
def test_switch_commit_revert(root: InstallRoot) -> None:
    first, second = staged(root, "2.1.0", 1), staged(root, "2.2.0", 2)
    assert root.pointer(TAF1_COMPONENT) is None and root.components() == []
    assert root.on_trial("legal") == []

    assert root.switch(TAF1_COMPONENT, first, "legal") == Pointer("1-2.1.0", None, TRIAL, "legal")
    assert root.pointer(TAF1_COMPONENT) == Pointer("1-2.1.0", None, TRIAL, "legal")
    assert root.current(TAF1_COMPONENT) == first
    assert root.components() == [TAF1_COMPONENT]
    assert root.on_trial("legal") == [TAF1_COMPONENT]
    assert root.on_trial("storage") == []

    root.commit(TAF1_COMPONENT)
    assert root.pointer(TAF1_COMPONENT) == Pointer("1-2.1.0", None, COMMITTED, "legal")
    assert root.on_trial("legal") == []
    root.commit(TAF1_COMPONENT)  # committing twice changes nothing
    assert root.pointer(TAF1_COMPONENT) == Pointer("1-2.1.0", None, COMMITTED, "legal")
    assert root.revert(TAF1_COMPONENT) is False  # committed, and no release named

    pointer = root.switch(TAF1_COMPONENT, second, "legal")
    assert pointer == Pointer("2-2.2.0", "1-2.1.0", TRIAL, "legal")  # the previous is kept
    assert root.revert(TAF1_COMPONENT) is True
    assert root.pointer(TAF1_COMPONENT) == Pointer("1-2.1.0", None, COMMITTED, "legal")
    assert root.current(TAF1_COMPONENT) == first

    assert root.revert(TAF1_COMPONENT, "2-2.2.0") is False  # it runs another release
    assert root.pointer(TAF1_COMPONENT) == Pointer("1-2.1.0", None, COMMITTED, "legal")
    assert root.revert(TAF1_COMPONENT, "1-2.1.0") is True  # committed, but the one named
    assert root.pointer(TAF1_COMPONENT) is None  # back to the installed code
    assert not (root.active / f"{TAF1_COMPONENT}.json").exists()
    assert root.current(TAF1_COMPONENT) is None and root.components() == []
    assert root.revert(TAF1_COMPONENT) is False
    root.commit(TAF1_COMPONENT)
    assert root.pointer(TAF1_COMPONENT) is None
    assert release_names(root, TAF1_COMPONENT) == ["1-2.1.0", "2-2.2.0"]  # releases stay


def test_a_trial_on_the_installed_code_reverts_to_it(root: InstallRoot) -> None:
    root.switch(TAF1_COMPONENT, staged(root, "2.1.0", 1), "legal")
    assert root.revert(TAF1_COMPONENT, "some-other-release") is True  # on trial: reverts
    assert root.pointer(TAF1_COMPONENT) is None


def test_trials_are_found_by_host(root: InstallRoot) -> None:
    root.switch(TAF1_COMPONENT, staged(root, "2.1.0", 1), "legal")
    display = root.stage("display", "1.1.0", 1, {"metrocloud.cloud.display": b""})
    root.switch("display", display, "display")
    assert root.components() == ["display", TAF1_COMPONENT]
    assert root.on_trial("legal") == [TAF1_COMPONENT]
    assert root.on_trial("display") == ["display"]
    root.commit("display")
    assert root.on_trial("display") == []
    assert root.pointer("display") == Pointer("1-1.1.0", None, COMMITTED, "display")


def test_a_pointer_is_replaced_in_one_rename(root: InstallRoot) -> None:
    root.switch(TAF1_COMPONENT, staged(root, "2.1.0", 1), "legal")
    root.switch(TAF1_COMPONENT, staged(root, "2.2.0", 2), "legal")
    assert sorted(p.name for p in root.active.iterdir()) == [f"{TAF1_COMPONENT}.json"]
    data = json.loads((root.active / f"{TAF1_COMPONENT}.json").read_bytes())
    assert data == {"release": "2-2.2.0", "previous": "1-2.1.0", "state": "trial", "host": "legal"}


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"1-2.1.0"',
        b'{"release": "1-2.1.0", "previous": null, "state": "trial"}',
        b'{"release": "1-2.1.0", "previous": null, "state": "testing", "host": "legal"}',
    ],
)
def test_an_unreadable_pointer_is_an_error(root: InstallRoot, content: bytes) -> None:
    root.active.mkdir(parents=True)
    (root.active / f"{TAF1_COMPONENT}.json").write_bytes(content)
    with pytest.raises(InstallRootError, match=TAF1_COMPONENT):
        root.pointer(TAF1_COMPONENT)
    with pytest.raises(InstallRootError):
        root.on_trial("legal")
    with pytest.raises(InstallRootError):
        root.overlay()


def test_a_pointer_to_a_missing_release_is_an_error(root: InstallRoot) -> None:
    root.set_pointer(TAF1_COMPONENT, Pointer("9-9.9.9", None, TRIAL, "legal"))
    with pytest.raises(InstallRootError, match=r"9-9\.9\.9"):
        root.current(TAF1_COMPONENT)


def test_a_release_of_another_component_is_an_error(root: InstallRoot) -> None:
    release = staged(root, "2.1.0", 1)
    moved = root.releases / TAF2_COMPONENT / release.folder.name
    moved.parent.mkdir(parents=True)
    release.folder.rename(moved)
    with pytest.raises(InstallRootError, match="names tariff-taf1"):
        root.release(TAF2_COMPONENT, release.folder.name)


@pytest.mark.parametrize("component", ["", "Tariff", "../x", "a" * 64, "-x"])
def test_a_pointer_needs_a_component_name(root: InstallRoot, component: str) -> None:
    with pytest.raises(ValueError):
        root.pointer(component)


# -- overlay ------------------------------------------------------------------------------------
def test_overlay_and_versions(root: InstallRoot) -> None:
    assert root.overlay() == {} and root.versions() == {}
    taf1 = staged(root, "2.1.0", 1)
    taf2 = root.stage(TAF2_COMPONENT, "2.1.0", 1, taf2_files("2.1.0"))
    root.switch(TAF1_COMPONENT, taf1, "legal")
    root.switch(TAF2_COMPONENT, taf2, "legal")
    both = {TAF1: taf1.path(TAF1), SCHEDULE: taf2.path(SCHEDULE), TAF2: taf2.path(TAF2)}
    assert root.overlay() == both
    assert root.versions() == {TAF1_COMPONENT: "2.1.0", TAF2_COMPONENT: "2.1.0"}

    candidate = staged(root, "2.2.0", 2)
    assert root.overlay(candidate) == {**both, TAF1: candidate.path(TAF1)}
    assert root.versions(candidate) == {TAF1_COMPONENT: "2.2.0", TAF2_COMPONENT: "2.1.0"}
    assert root.overlay() == both  # a substitute switches nothing

    smaller = root.stage(TAF2_COMPONENT, "2.2.0", 2, {TAF2: taf2_files("2.2.0")[TAF2]})
    assert root.overlay(smaller) == {TAF1: taf1.path(TAF1), TAF2: smaller.path(TAF2)}


def test_overlay_with_a_substitute_of_a_component_without_pointer(root: InstallRoot) -> None:
    candidate = staged(root, "2.1.0", 1)
    assert root.overlay(candidate) == {TAF1: candidate.path(TAF1)}
    assert root.versions(candidate) == {TAF1_COMPONENT: "2.1.0"}
    assert root.overlay() == {}


# -- activation in a process of its own ---------------------------------------------------------
def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


ACTIVATE = """
import json, sys
from metrocloud.download.installroot import InstallRoot, activate, active_version
root = InstallRoot({root!r})
substitute = None if {release!r} is None else root.release("tariff-taf1", {release!r})
{before}
files = activate(root, substitute)
import metrocloud.tariffs.taf1 as taf1
import metrocloud.tariffs.base as base
print(json.dumps({{
    "files": {{m: str(p) for m, p in files.items()}},
    "taf1": taf1.__file__,
    "base": base.__file__,
    "marker": getattr(taf1, "RELEASE_MARKER", None),
    "version": taf1.Taf1.version,
    "active": active_version("tariff-taf1"),
}}))
"""


def activated(root: InstallRoot, release: str | None = None, before: str = "") -> dict[str, object]:
    done = run_python(ACTIVATE.format(root=str(root.root), release=release, before=before))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert isinstance(found, dict)
    return found


def test_activate_imports_the_release_file(root: InstallRoot) -> None:
    release = staged(root, "2.1.0", 1, MARKER)
    root.switch(TAF1_COMPONENT, release, "legal")
    found = activated(root)
    assert found["files"] == {TAF1: str(release.path(TAF1))}
    assert found["taf1"] == str(release.path(TAF1))
    assert Path(str(found["taf1"])).parent == release.folder
    assert found["marker"] == "loaded from the release"
    assert found["version"] == "2.1.0"
    assert found["active"] == "2.1.0"
    assert found["base"] == str(origin(BASE))  # modules not released: installed


def test_activate_with_a_substitute(root: InstallRoot) -> None:
    running = staged(root, "2.1.0", 1)
    root.switch(TAF1_COMPONENT, running, "legal")
    candidate = staged(root, "2.2.0", 2, MARKER)
    found = activated(root, release=candidate.folder.name)
    assert found["taf1"] == str(candidate.path(TAF1))
    assert (found["marker"], found["version"], found["active"]) == (
        "loaded from the release",
        "2.2.0",
        "2.2.0",
    )
    assert root.pointer(TAF1_COMPONENT) == Pointer("1-2.1.0", None, TRIAL, "legal")


def test_without_releases_activate_loads_the_installed_code(root: InstallRoot) -> None:
    found = activated(root)
    assert found["files"] == {}
    assert found["taf1"] == str(origin(TAF1))
    assert (found["marker"], found["version"], found["active"]) == (None, "2.0.0", None)


def test_activate_refuses_modules_imported_before(root: InstallRoot) -> None:
    release = staged(root, "2.1.0", 1, MARKER)
    root.switch(TAF1_COMPONENT, release, "legal")
    code = ACTIVATE.format(
        root=str(root.root), release=None, before="import metrocloud.tariffs.taf1"
    )
    done = run_python(code)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and TAF1 in last, done.stderr
    assert done.stdout == ""


# -- preflight: the identification a fresh process computes --------------------------------------
def test_preflight_identifies_the_release_it_is_given(root: InstallRoot) -> None:
    installed = identify(root.root, TAF1_COMPONENT)
    assert (installed["component"], installed["version"]) == (TAF1_COMPONENT, "2.0.0")
    release = staged(root, "2.1.0", 1, MARKER)
    candidate = identify(root.root, TAF1_COMPONENT, release)
    assert candidate["version"] == "2.1.0"
    assert candidate["name"] == installed["name"]
    assert candidate["checksum"] != installed["checksum"]
    again = identify(root.root, TAF1_COMPONENT)  # staging switched nothing
    assert again.pop("instance_id") != installed.pop("instance_id")  # a process of its own
    assert again == installed


def test_preflight_fails_on_code_that_cannot_load(root: InstallRoot) -> None:
    release = staged(root, "2.1.0", 1, b'\nraise RuntimeError("boom")\n')
    with pytest.raises(PreflightFailed, match="boom"):
        identify(root.root, TAF1_COMPONENT, release)
    with pytest.raises(PreflightFailed, match="no legally relevant component"):
        identify(root.root, "tariff-taf9")
    assert source_of(TAF1)  # the installed code is untouched
