"""Tests of the environment set-up: scripts/find-python and the interpreter choice."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIND_PYTHON = ROOT / "scripts" / "find-python"
# Absolute bash, so that the tests with a restricted PATH need nothing on it.
BASH = "/bin/bash" if os.path.exists("/bin/bash") else "/usr/bin/bash"


def test_find_python_prints_a_310_or_312_interpreter() -> None:
    result = subprocess.run(
        [str(FIND_PYTHON)], capture_output=True, text=True, check=True, timeout=60
    )
    interpreter = result.stdout.strip()
    assert interpreter, result.stderr
    version = subprocess.run(
        [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert version in ("3.10", "3.12")


def test_find_python_all_lists_only_qualifying_interpreters() -> None:
    result = subprocess.run(
        [str(FIND_PYTHON), "--all"], capture_output=True, text=True, check=True, timeout=120
    )
    first = subprocess.run(
        [str(FIND_PYTHON)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    lines = result.stdout.splitlines()
    assert lines
    assert lines[0] == first
    assert len(lines) == len(set(lines))


def test_find_python_fails_clearly_without_a_suitable_interpreter(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3.11"
    fake.write_text("#!/bin/sh\necho 'Python 3.11.2'\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    empty_pyenv = tmp_path / "pyenv"
    empty_pyenv.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": str(bin_dir),
        "PYENV_ROOT": str(empty_pyenv),
        "HOME": str(home),
        "METROCLOUD_PYTHON_SEARCH_SYSTEM": "0",
    }
    result = subprocess.run(
        [BASH, str(FIND_PYTHON)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "3.10 or 3.12" in result.stderr
    assert "OpenFHE" in result.stderr
    assert "pyenv install 3.10" in result.stderr
    assert "python3.10-venv" in result.stderr


def other_cpython() -> str | None:
    """A working CPython that is neither 3.10 nor 3.12 (3.11 is Debian 12's own python3)."""
    names = ("python3.11", "python3.13", "python3.9", "python3")
    for path in dict.fromkeys(p for n in names for p in (shutil.which(n), f"/usr/bin/{n}") if p):
        if not os.access(path, os.X_OK):
            continue
        probe = subprocess.run(
            [path, "-c", "import sys; print(sys.implementation.name, sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        kind, _, version = probe.stdout.strip().partition(" ")
        if probe.returncode == 0 and kind == "cpython" and version not in ("(3, 10)", "(3, 12)"):
            return path
    return None


def test_find_python_rejects_another_python_given_as_python(tmp_path: Path) -> None:
    real_other = other_cpython()
    if real_other is None:  # Debian 12 always has its python3.11: only a bare 3.10/3.12 box
        pytest.skip("no CPython other than 3.10 and 3.12 on this machine to be refused")
    env = {
        "PATH": str(tmp_path),
        "PYENV_ROOT": str(tmp_path / "nopyenv"),
        "HOME": str(tmp_path),
        "METROCLOUD_PYTHON_SEARCH_SYSTEM": "0",
        "PYTHON": real_other,
    }
    result = subprocess.run(
        [BASH, str(FIND_PYTHON), "--all"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "3.10 or 3.12" in result.stderr


def test_running_interpreter_imports_openfhe() -> None:
    assert sys.version_info[:2] in ((3, 10), (3, 12))
    import openfhe

    assert hasattr(openfhe, "CCParamsCKKSRNS")
