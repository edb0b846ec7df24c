"""Start a cloud service that takes injected faults, for the testbed's anomaly scenarios only:
``python -m metrocloud.testbed.faulty NAME --data DIR``.

The certified services have no fault switch. This entry point boots the same way as
:mod:`metrocloud.cloud.boot` (install root first), but runs a subclass of the service that
also watches the file ``run/<process>.fault`` in the data folder. The testbed writes it
(:func:`metrocloud.testbed.disturb.inject`) as JSON ``{"fault": ..., "until": <unix time>}``;
the fault lasts until then, or until the file is gone. The faults (:data:`IN_PROCESS`):

- ``cpu-hog``: a thread that keeps one core busy (hashing, which releases the GIL);
- ``memory-leak``: 8 MiB more held every half second (up to 2 GiB), given back at the end;
- ``stall``: the service's consumers stop handling the messages they fetched (they hold
  them unacknowledged) until the fault ends;
- ``slow-storage``: every call into the store waits ``DELAY_S`` first, as a slow disk under
  a synchronous database would make it.

A crash and a message flood need no help from inside (see :mod:`metrocloud.testbed.disturb`).
The subclasses are in :mod:`metrocloud.testbed.fault_injection`.
"""

from __future__ import annotations

import sys

ENTRY = "metrocloud.testbed.faulty"
"""The module a fault-taking service runs (``python -m``)."""
CLASSES = "metrocloud.testbed.fault_injection"
IN_PROCESS = ("cpu-hog", "memory-leak", "stall", "slow-storage")
"""The faults a service started through this entry point takes."""


def fault_file_name(process: str) -> str:
    """The control file's name in the data folder's ``run/``."""
    return f"{process}.fault"


def main(argv: list[str] | None = None) -> None:
    from metrocloud.cloud import boot  # imports nothing legally relevant

    args = list(sys.argv[1:] if argv is None else argv)
    name = args[0] if args and not args[0].startswith("-") else ""
    boot.main(args, f"{CLASSES}:faulty_{name}")


if __name__ == "__main__":
    main()
