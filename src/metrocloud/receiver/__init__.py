"""The customer's secure display: the only holder of the FHE secret key."""

from metrocloud.receiver.verify import Verdict, check_result

__all__ = ["Verdict", "check_result"]
