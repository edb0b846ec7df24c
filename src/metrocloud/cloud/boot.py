"""Start one cloud process on the installed releases:
``python -m metrocloud.cloud.boot NAME --data DIR [--option K=V ...]`` (embedded) or
``python -m metrocloud.cloud.boot NAME --config FILE`` (one process of a deployment).

1. The install root (``DIR/software``) is activated before any legally relevant module is
   imported, so the process runs, and identifies, the releases the pointers name.
2. The service runs (:func:`metrocloud.cloud.serve.main`).
3. When the download manager told it to switch (:meth:`Service.switch`), the service has
   finished and acknowledged the messages it held; the process then replaces itself with a
   fresh one (``execv``: same process id, so its supervisor notices nothing) that loads the
   new release.
4. When the start fails while one of its components is on trial, the pointers go back to
   the previous releases and the process starts again on those.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from metrocloud.download.installroot import InstallRoot, activate

_log = logging.getLogger("metrocloud.cloud.boot")


def _argument(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _again(argv: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "metrocloud.cloud.boot", *argv])


def main(argv: list[str] | None = None, subclass: str | None = None) -> None:
    """Boot the process; ``subclass`` (``module:class``, imported only after the install root
    is active) runs a subclass of the service's class (see :func:`serve.main`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    data = _argument(argv, "--data")
    config = _argument(argv, "--config")
    if data is None and config is not None:
        from metrocloud.cloud.config import load_config  # nothing legally relevant

        data = str(load_config(Path(config)).data)
    name = argv[0] if argv and not argv[0].startswith("-") else None
    root = InstallRoot(Path(data) / "software") if data else None
    try:
        if root is not None:
            activate(root)
        from metrocloud.cloud import serve

        service = serve.main(argv, subclass)
    except Exception:
        if root is not None and name is not None:
            reverted = [c for c in root.on_trial(name) if root.revert(c)]
            if reverted:
                _log.exception("start failed on trial releases of %s; going back", reverted)
                _again(argv)
        raise
    if service is not None and service.restart_requested:
        _again(argv)


if __name__ == "__main__":
    main()
