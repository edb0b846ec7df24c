"""The ``metrocloud`` command as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from metrocloud.core.ports import free_port

SCRIPT = Path(sys.executable).with_name("metrocloud")


def metrocloud(*args: str, script: bool = False, timeout_s: float = 120.0) -> tuple[int, str]:
    """Run the command; ``script`` uses the installed console script instead of ``-m``."""
    if script:
        assert SCRIPT.is_file(), f"console script {SCRIPT} is not installed"
        cmd = [str(SCRIPT), *args]
    else:
        cmd = [sys.executable, "-m", "metrocloud.cli", *args]
    # wide, plain output so that rich neither wraps nor colours what the asserts look for
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_help_lists_the_commands() -> None:
    code, out = metrocloud("--help", script=True)
    assert code == 0, out
    # the commands panel: each row is the command name, two or more spaces, its help
    commands = set(re.findall(r"^[^\w-]*(\w+) {2,}\S", out, re.MULTILINE))
    assert {"up", "demo"} <= commands, out


def test_demo_bills_one_meter_day_verifies_and_shows_the_display(tmp_path: Path) -> None:
    """The demo with customer c-0001's secure display: its page is served after the
    month, the bill on it verified, until Ctrl-C stops display and cloud cleanly."""
    data, port = tmp_path / "data", free_port()
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    env["METROCLOUD_DISPLAY_PASSPHRASE"] = "a passphrase"
    args = ["demo", "--meters", "1", "--days", "1", "--data", str(data), "--display"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrocloud.cli", *args, "--display-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline, page = time.monotonic() + 120, None
        while page is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
            except httpx.TransportError:
                time.sleep(0.5)
        assert page is not None, "the display's page never answered"
        assert 'data-meter="m-0001"' in page and 'data-status="verified"' in page
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "every bill verified" in out, out
    assert "m-0001" in out and "yes" in out, out
    assert "secure display at http://127.0.0.1:" in out and "match" in out, out
    assert "Traceback" not in out, out
    assert (data / "logbook.sqlite").is_file()  # --data keeps the data folder
    assert (data / "customers" / "c-0001" / "keys" / "secret.sealed").is_file()


def test_demo_refuses_a_used_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "metrocloud.sqlite").write_bytes(b"an earlier run")
    code, out = metrocloud("demo", "--meters", "1", "--days", "1", "--data", str(data))
    assert code == 2, out
    assert "is not empty" in out and "Traceback" not in out, out
    assert sorted(p.name for p in data.iterdir()) == ["metrocloud.sqlite"]  # nothing touched


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "--days must be between 1 and 31"),
        (["--days", "32"], "--days must be between 1 and 31"),
        (["--meters", "0"], "--meters must be at least 1"),
        (["--tariff", "nope"], "unknown tariff program 'nope'"),
    ],
)
def test_demo_refuses_bad_options_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    data = tmp_path / "data"
    code, out = metrocloud("demo", *args, "--data", str(data), timeout_s=60.0)
    assert code != 0, out
    assert "error" in out.lower() and message in out, out
    assert "Traceback" not in out, out
    assert not data.exists(), "nothing may be started for invalid options"


def test_version_and_the_legal_identifications() -> None:
    from metrocloud import __version__
    from metrocloud.cloud.software import identify_all

    code, out = metrocloud("version", script=True)
    assert code == 0 and out.strip() == f"metrocloud {__version__}"
    code, out = metrocloud("version", "--legal")
    assert code == 0, out
    for ident in identify_all():  # each component with its full checksum, as loaded here
        cells = rf"{re.escape(ident.component)}\s+\W\s+{ident.name}\s+\W\s+{ident.version}"
        row = re.search(cells + r"\s+\W\s+([0-9a-f]{64})", out)
        assert row and row.group(1) == ident.checksum, out
    code, out = metrocloud("version", "--legal", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {d["component"] for d in lines} == {i.component for i in identify_all()}
    assert all(set(d) == {"component", "name", "version", "checksum"} for d in lines)
