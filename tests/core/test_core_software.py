"""Software identification: a checksum over exactly the legally relevant code as loaded.

The separation is tested on a copy of the package: changing code outside the legally
relevant modules leaves every checksum unchanged; changing a legally relevant module changes
the checksum of exactly the components that contain it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import metrocloud
from metrocloud.cloud.software import LEGAL_COMPONENTS, all_components, identify_all
from metrocloud.core.software import LegalComponent, SoftwareIdentification

PACKAGE = Path(metrocloud.__file__).parent
NOT_LEGALLY_RELEVANT = (
    "cli.py",
    "testbed/observe.py",
    "testbed/pipeline.py",
    "cloud/cluster.py",
    "cloud/serve.py",
    "cloud/https.py",
    "bus/server.py",
    "pki/authority.py",
    "logbook/api.py",
    "logbook/commands.py",
)


def checksums(root: Path) -> dict[str, str]:
    """Every component's checksum as a fresh interpreter loads the package under ``root``."""
    code = (
        "import json; from metrocloud.cloud.software import identify_all; "
        "print(json.dumps({i.component: i.checksum for i in identify_all()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """Fresh copies of the installed package, one per call."""
    base = tmp_path_factory.mktemp("package")

    def make() -> Path:
        root = base / f"copy-{len(list(base.iterdir()))}"
        shutil.copytree(PACKAGE, root / "metrocloud", ignore=shutil.ignore_patterns("__pycache__"))
        return root

    return make


@pytest.fixture(scope="module")
def original(copy: Callable[[], Path]) -> dict[str, str]:
    return checksums(copy())


def edit(root: Path, module: str) -> None:
    path = root / "metrocloud" / module
    path.write_text(path.read_text() + "\n# a change\n")


def test_the_copy_identifies_as_the_installed_package(original: dict[str, str]) -> None:
    assert original == {i.component: i.checksum for i in identify_all()}


def test_non_relevant_changes_leave_every_checksum_unchanged(
    copy: Callable[[], Path], original: dict[str, str]
) -> None:
    root = copy()
    for module in NOT_LEGALLY_RELEVANT:
        edit(root, module)
    assert checksums(root) == original


@pytest.mark.parametrize(
    ("module", "changed"),
    [
        ("cloud/legal.py", {"legal"}),
        ("tariffs/taf1.py", {"tariff-taf1"}),
        ("tariffs/comparison.py", {"tariff-taf3", "tariff-taf4"}),
        ("store/sqlite.py", {"storage"}),
        ("logbook/tree.py", {"logbook"}),
        ("core/messages.py", {"communication", "legal", "storage", "display"}),
        ("fhe/evaluator.py", {f"tariff-taf{n}" for n in (1, 2, 3, 4)}),
    ],
)
def test_a_relevant_change_changes_exactly_its_components(
    copy: Callable[[], Path], original: dict[str, str], module: str, changed: set[str]
) -> None:
    root = copy()
    edit(root, module)
    after = checksums(root)
    assert {c for c in original if after[c] != original[c]} == changed


def test_the_table_names_real_modules_and_no_supervisor_code() -> None:
    listed = {m for c in all_components().values() for m in c.modules}
    for module in listed:
        relative = module.removeprefix("metrocloud.").replace(".", "/") + ".py"
        assert (PACKAGE / relative).is_file(), module
    for path in NOT_LEGALLY_RELEVANT:
        module = "metrocloud." + path.removesuffix(".py").replace("/", ".")
        assert module not in listed


def test_a_module_changed_on_disk_after_loading_is_named(tmp_path: Path) -> None:
    (tmp_path / "mc_sample_legal.py").write_text("PRICE = 31\n")
    sys.path.insert(0, str(tmp_path))
    try:
        component = LegalComponent("sample", "sample-software", "1.0", ("mc_sample_legal",))
        loaded = component.load()
        before = loaded.identification
        assert loaded.changed_modules() == []
        (tmp_path / "mc_sample_legal.py").write_text("PRICE = 32\n")  # patched while running
        assert loaded.changed_modules() == ["mc_sample_legal"]
        assert loaded.identification == before  # what runs is still what was loaded
        assert component.load().identification.checksum != before.checksum
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mc_sample_legal", None)


def test_identifications_are_unique_per_process_and_round_trip() -> None:
    first = LEGAL_COMPONENTS["legal"].load().identification
    second = LEGAL_COMPONENTS["legal"].load().identification
    assert first.checksum == second.checksum and first.instance_id != second.instance_id
    assert SoftwareIdentification.from_dict(first.to_dict()) == first
    assert len(first.checksum) == 64 and int(first.checksum, 16) >= 0


def test_a_component_names_each_module_once() -> None:
    with pytest.raises(ValueError, match="each once"):
        LegalComponent("x", "x", "1", ("a", "a"))
    with pytest.raises(ValueError, match="each once"):
        LegalComponent("x", "x", "1", ())
