"""The insider's manipulated legal lives in the testbed, apart from the certified code."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrocloud.cloud.cluster import Cluster
from metrocloud.cloud.legal import Legal
from metrocloud.cloud.serve import service_class
from metrocloud.testbed.insider import ENTRY, FAULT, MANIPULATED
from metrocloud.testbed.manipulated import ManipulatedLegal, flip_bytes


def test_the_certified_service_runs_its_own_class_unless_code_chooses_a_subclass() -> None:
    assert service_class("legal") is Legal
    assert service_class("legal", MANIPULATED) is ManipulatedLegal
    with pytest.raises(TypeError, match="is not a Legal"):
        service_class("legal", "metrocloud.cloud.storage:Storage")


def test_legal_source_has_no_manipulation_switch() -> None:
    import metrocloud.cloud.legal as certified

    text = Path(str(certified.__file__)).read_text(encoding="utf-8")
    assert "fault" not in text and "flip" not in text and "shift" not in text


def test_the_testbed_starts_a_manipulated_legal_through_its_own_entry(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "data")
    assert cluster.command("legal")[2] == "metrocloud.cloud.boot"
    cluster.entries["legal"] = ENTRY
    cluster.options["legal"] = {"fault": "flip-r:m-0001"}
    command = cluster.command("legal")
    assert command[2:4] == [ENTRY, "legal"] and command[-2:] == ["--option", "fault=flip-r:m-0001"]
    assert cluster.command("storage")[2] == "metrocloud.cloud.boot"


@pytest.mark.parametrize("fault", ["flip-r:m-0001", "shift-schedule:8", "shift-schedule:-4"])
def test_known_faults(fault: str) -> None:
    assert FAULT.fullmatch(fault)


@pytest.mark.parametrize("fault", ["", "flip-r:", "shift-schedule:soon", "drop:m-1"])
def test_unknown_faults(fault: str) -> None:
    assert not FAULT.fullmatch(fault)


def test_flip_bytes_changes_sixteen_bytes_in_the_middle() -> None:
    blob = bytes(range(256)) * 4
    flipped = flip_bytes(blob)
    changed = [i for i, (a, b) in enumerate(zip(blob, flipped, strict=True)) if a != b]
    assert len(flipped) == len(blob) and changed == list(range(512, 528))
