"""Identify a component as a fresh process would load it, before anything is switched.

``python -m metrocloud.download.preflight --root DIR --component C [--release NAME]``
activates the install root (with release ``NAME`` of ``C`` in place of ``C``'s current one),
imports ``C``'s legally relevant modules exactly as a service start would, and prints the
identification as JSON. A release whose code cannot even be imported fails here, in a
process of its own, while the running component is left alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from metrocloud.download.installroot import InstallRoot, Release, activate

PREFLIGHT_TIMEOUT_S = 120.0


class PreflightFailed(Exception):
    """The component could not be loaded; the message ends with what the process said."""


def identify(root: Path, component: str, release: Release | None = None) -> dict[str, str]:
    """The identification of ``component`` with ``release`` (or the current code), as a
    new process loads it; :class:`PreflightFailed` if it cannot be loaded."""
    cmd = [sys.executable, "-m", "metrocloud.download.preflight", "--root", str(root)]
    cmd += ["--component", component]
    if release is not None:
        cmd += ["--release", release.folder.name]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PREFLIGHT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise PreflightFailed(
            f"loading {component} took over {PREFLIGHT_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise PreflightFailed(f"loading {component} failed: {said[-1] if said else '?'}")
    try:
        found = json.loads(done.stdout)
    except ValueError:
        raise PreflightFailed(f"loading {component} gave no identification") from None
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise PreflightFailed(f"loading {component} gave no identification")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--component", required=True)
    parser.add_argument("--release")
    args = parser.parse_args(argv)
    root = InstallRoot(args.root)
    release = None if args.release is None else root.release(args.component, args.release)
    activate(root, release)
    from metrocloud.cloud.software import load  # only now: it imports legally relevant code

    loaded = load(args.component)
    if loaded is None:
        raise SystemExit(f"{args.component} is no legally relevant component")
    json.dump(loaded.identification.to_dict(), sys.stdout)


if __name__ == "__main__":
    main()
