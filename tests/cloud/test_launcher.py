"""The fork server: a forked child is what ``python -m module args`` would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrocloud.cloud.launcher import SPAWN_ENV, ForkedProcess, Launcher, start_process

PROBE = """
import json, os, random, sys, time
report = {
    "argv": sys.argv[1:],
    "main": __name__,
    "env": os.environ.get("PROBE_VALUE"),
    "omp": os.environ.get("OMP_NUM_THREADS"),
    "inherited": os.environ.get("ONLY_IN_THE_SUPERVISOR"),
    "cwd": os.getcwd(),
    "random": random.random(),
    "metrocloud": sorted(m for m in sys.modules if m.startswith("metrocloud")),
    "stdin": sys.stdin.read(),
}
print(json.dumps(report), flush=True)
if "--sleep" in sys.argv:
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    started = Launcher()
    yield started
    started.close()


def spawn(
    launcher: Launcher, folder: Path, *args: str, env: dict[str, str] | None = None
) -> ForkedProcess:
    (folder / "probe.py").write_text(PROBE)
    return launcher.spawn(
        [sys.executable, "-m", "probe", *args],
        env or {"PROBE_VALUE": "given", "OMP_NUM_THREADS": "3"},
        folder / "probe.log",
        cwd=folder,
    )


def reports(folder: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in (folder / "probe.log").read_text().splitlines()
        if line.startswith("{")
    ]


def test_a_child_runs_the_module_as_main_with_its_own_environment(
    launcher: Launcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONLY_IN_THE_SUPERVISOR", "x")
    child = spawn(launcher, tmp_path, "0", "an argument")
    assert child.wait(30) == 0 and child.poll() == 0
    (report,) = reports(tmp_path)
    assert report["argv"] == ["0", "an argument"]
    assert report["main"] == "__main__"
    assert (report["env"], report["omp"], report["inherited"]) == ("given", "3", None)
    assert report["cwd"] == str(tmp_path)
    assert report["stdin"] == ""  # /dev/null
    # nothing legally relevant was imported before the child's own imports
    assert report["metrocloud"] == ["metrocloud", "metrocloud.cloud", "metrocloud.cloud.launcher"]


def test_exit_codes_and_signals_read_as_popen_has_them(launcher: Launcher, tmp_path: Path) -> None:
    assert spawn(launcher, tmp_path, "3").wait(30) == 3
    sleeper = spawn(launcher, tmp_path, "0", "--sleep")
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.wait(0.2)
    assert sleeper.poll() is None
    os.kill(sleeper.pid, 0)  # a real process of its own
    title = Path(f"/proc/{sleeper.pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert b"-m probe 0 --sleep" in title  # ps shows the command, not the zygote's
    sleeper.kill()
    assert sleeper.wait(30) == -signal.SIGKILL
    terminated = spawn(launcher, tmp_path, "0", "--sleep")
    time.sleep(0.3)
    terminated.terminate()
    assert terminated.wait(30) == -signal.SIGTERM


def test_each_child_draws_its_own_random_numbers(launcher: Launcher, tmp_path: Path) -> None:
    for _ in range(2):
        assert spawn(launcher, tmp_path, "0").wait(30) == 0
    first, second = reports(tmp_path)
    assert first["random"] != second["random"]


def test_an_uncaught_exception_exits_1_with_its_trace(launcher: Launcher, tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    child = launcher.spawn([sys.executable, "-m", "broken"], {}, tmp_path / "b.log", cwd=tmp_path)
    assert child.wait(30) == 1
    log = (tmp_path / "b.log").read_text()
    assert "Traceback" in log and "RuntimeError: broken on purpose" in log


def test_only_python_m_commands_are_forked(launcher: Launcher, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="python -m commands only"):
        launcher.spawn(["/bin/true"], {}, tmp_path / "x.log")


def test_without_the_fork_server_processes_are_executed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SPAWN_ENV, "exec")
    (tmp_path / "probe.py").write_text(PROBE)
    monkeypatch.chdir(tmp_path)
    process = start_process(
        [sys.executable, "-m", "probe", "5"],
        dict(os.environ, PROBE_VALUE="x"),
        tmp_path / "probe.log",
    )
    assert isinstance(process, subprocess.Popen)
    assert process.wait(30) == 5
    assert reports(tmp_path)[0]["env"] == "x"
