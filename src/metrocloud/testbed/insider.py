"""Start ``legal`` as an insider would run it manipulated, for the testbed's scenarios only:
``python -m metrocloud.testbed.insider legal --data DIR --option fault=FAULT``.

The certified service has no switch for this: no option or configuration file makes
:class:`~metrocloud.cloud.legal.Legal` bill wrongly. Manipulating it takes other code, here
:class:`~metrocloud.testbed.manipulated.ManipulatedLegal`, started by this entry point
instead of :mod:`metrocloud.cloud.boot` (it boots the same way: the install root is active
before any legally relevant module loads). A restart that the download manager asks for
comes back honest, through the certified boot.

The faults (:data:`FAULT`):

- ``flip-r:<meter>`` corrupts r (not r') of that meter's results: the duplicate check
  catches it;
- ``shift-schedule:<n>`` bills every reading of a time-dependent program (TAF 1, 2) in the
  register of the quarter hour ``n`` later, for r and r' alike: a consistent manipulation,
  which only a check of the function itself can catch.
"""

from __future__ import annotations

import re
import sys

ENTRY = "metrocloud.testbed.insider"
"""The module a manipulated legal runs (``python -m``)."""
FAULT = re.compile(r"flip-r:[A-Za-z0-9-]{1,64}|shift-schedule:-?[0-9]{1,4}")
"""The faults legal can be run with."""
MANIPULATED = "metrocloud.testbed.manipulated:ManipulatedLegal"


def main(argv: list[str] | None = None) -> None:
    from metrocloud.cloud import boot  # imports nothing legally relevant

    boot.main(list(sys.argv[1:] if argv is None else argv), MANIPULATED)


if __name__ == "__main__":
    main()
