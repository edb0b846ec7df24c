"""Anomaly detection for the cloud: green (normal), yellow (an anomaly that leaves the system
stable) or red (an anomaly that affects its stability), per component and for the system.

Pure logic, no network: the cloud's anomaly service scrapes every component's metrics and
the broker's consumer positions and hands them to this package. :mod:`.features` turns
scrapes into features, :mod:`.baseline` learns what is normal, :mod:`.detector` checks
each round against it, :mod:`.hysteresis` holds a level back until it repeats,
:mod:`.progress` tells stalled consumers, and :mod:`.rules` holds every setting.
"""

from metrocloud.detection.baseline import Baseline, FeatureStats, JointModel
from metrocloud.detection.detector import Assessment, Cause, Detector, Observation
from metrocloud.detection.features import (
    Scrape,
    Software,
    derive,
    parse_scrape,
    sample_key,
    software_context,
)
from metrocloud.detection.hysteresis import StateMachine, Transition
from metrocloud.detection.progress import ConsumerProgress
from metrocloud.detection.rules import DetectorConfig, Level, load_rules

__all__ = [
    "Assessment",
    "Baseline",
    "Cause",
    "ConsumerProgress",
    "Detector",
    "DetectorConfig",
    "FeatureStats",
    "JointModel",
    "Level",
    "Observation",
    "Scrape",
    "Software",
    "StateMachine",
    "Transition",
    "derive",
    "load_rules",
    "parse_scrape",
    "sample_key",
    "software_context",
]
