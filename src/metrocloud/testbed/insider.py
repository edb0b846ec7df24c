"""Start ``legal`` as an insider would run it manipulated, for the testbed's scenarios only:
``python -m metrocloud.testbed.insider legal --data DIR --option fault=FAULT``.

The certified service has no switch for this: no option or configuration file makes
:class:`~metrocloud.cloud.legal.Legal` bill wrongly. Manipulating it takes other code, here
:class:`~metrocloud.testbed.manipulated.ManipulatedLegal`, started by this entry point
instead of :mod:`metrocloud.cloud.boot` (it boots the same way: the install root is active
before any legally relevant module loads). A restart that the download manager asks for
comes back honest, through the certified boot.

The faults (:data:`FAULT`, one a run). All but ``flip-r`` change the tariff program as
``legal`` loads it (:func:`~metrocloud.testbed.manipulated.manipulate_program`) and leave
what the receiver compares with the contract as it was: the program's name, configuration
(digest), register count and software identification. Each one bills r and r' alike, so
the duplicate check does not see it. A program kind a fault does not apply to (TAF 1, 2 are
register programs, TAF 3, 4 comparison programs) is billed honestly.

- ``flip-r:<meter>`` corrupts r (not r') of that meter's results: the duplicate check
  catches it;
- ``shift-schedule:<n>`` (TAF 1, 2) bills every reading in the register of the quarter
  hour ``n`` later: consistent, only a check of the function itself can catch it;
- ``price:<percent>`` (all) scales every price by ``(100 + percent) / 100`` (rounded
  down; -100 to 999): the display's bill check catches it (bill != contract prices x
  registers);
- ``add-constant:<wh>`` (TAF 1, 2) adds ``wh`` to tariff register 0 and to the total, and
  the price of register 0 times ``wh`` to the bill: consistent, only a check of the
  function can catch it;
- ``skip-reading:<n>`` (TAF 1, 2) leaves the quarter hour at position ``n`` of every
  billing period (0 is its first) out of the tariff registers and the bill: the display's
  own check catches it too (tariff + error registers != total);
- ``threshold:<wh>`` (TAF 3, 4) shifts every threshold (TAF 3) or budget (TAF 4) by
  ``wh``: consistent, only a check of the function can catch it.
"""

from __future__ import annotations

import re
import sys

ENTRY = "metrocloud.testbed.insider"
"""The module a manipulated legal runs (``python -m``)."""
FAULT = re.compile(
    r"flip-r:[A-Za-z0-9-]{1,64}"
    r"|shift-schedule:-?[0-9]{1,4}"
    r"|price:(?:-100|-[0-9]{1,2}|[0-9]{1,3})"
    r"|add-constant:-?[0-9]{1,6}"
    r"|skip-reading:[0-9]{1,4}"
    r"|threshold:-?[0-9]{1,8}"
)
"""The faults legal can be run with."""
FAULT_SYNTAX = (
    "flip-r:<meter>, shift-schedule:<quarter hours>, price:<percent>, add-constant:<Wh>, "
    "skip-reading:<position> or threshold:<Wh>"
)
"""The faults of :data:`FAULT`, for error messages."""
MANIPULATED = "metrocloud.testbed.manipulated:ManipulatedLegal"


def main(argv: list[str] | None = None) -> None:
    from metrocloud.cloud import boot  # imports nothing legally relevant

    boot.main(list(sys.argv[1:] if argv is None else argv), MANIPULATED)


if __name__ == "__main__":
    main()
