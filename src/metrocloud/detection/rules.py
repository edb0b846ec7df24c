"""The anomaly detector's levels and its documented, configurable rules.

A component, and the system as a whole, is green (normal), yellow (an anomaly that does
not affect the stability of the system) or red (an anomaly that does). Every threshold
the detector and its state machine use is a setting of :class:`DetectorConfig`, read from
the ``[detector]`` table of a TOML file (:func:`load_rules`). ``docs/anomaly-rules.md``
describes each setting for an operator or a notified body.
"""

from __future__ import annotations

import enum
import fnmatch
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from metrocloud.core.errors import ConfigurationError
from metrocloud.core.settings import problems, read_toml


class Level(enum.IntEnum):
    """How far a component, or the system, is from normal."""

    GREEN = 0
    """Normal."""
    YELLOW = 1
    """An anomaly; the stability of the system is not affected."""
    RED = 2
    """An anomaly that affects the stability of the system."""

    @property
    def label(self) -> str:
        """``green``, ``yellow`` or ``red``."""
        return self.name.lower()


DEFAULT_FLOORS: dict[str, float] = {
    "cpu": 0.05,
    "rss_mb": 16.0,
    "fds": 4.0,
    "sockets": 4.0,
    "threads": 2.0,
    "io_read_kbs": 256.0,
    "io_write_kbs": 256.0,
    "in": 1.0,
    "out": 1.0,
    "rejections": 0.5,
    "errors": 0.2,
    "latency": 0.05,
    "pending": 5.0,
}
"""The smallest scale of each feature kind, in the feature's own unit."""


def feature_kind(feature: str) -> str:
    """The kind of a feature: ``legal/in:legal.in.reading.*`` → ``in``."""
    return feature.partition("/")[2].partition(":")[0]


def feature_component(feature: str) -> str:
    """The component a feature belongs to: ``legal/cpu`` → ``legal``."""
    return feature.partition("/")[0]


class DetectorConfig(BaseModel):
    """Every setting of the anomaly detector, with its default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    interval_s: float = Field(default=2.0, gt=0)
    """Seconds between two scrapes of every component."""
    training_s: float = Field(default=120.0, gt=0)
    """Seconds of normal operation the baseline is learnt from."""
    min_training_samples: int = Field(default=20, ge=2)
    """Training also goes on until at least this many samples were seen."""
    smoothing: int = Field(default=5, ge=1)
    """The value checked is the mean of a feature's last this many values."""
    z_yellow: float = Field(default=6.0, gt=0)
    """Robust z-score above which a feature is anomalous."""
    margin: float = Field(default=0.5, ge=0)
    """The value must also exceed the largest training value by this share of
    ``max(training range, scale)``: bursts already seen in training do not alarm."""
    floors: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FLOORS))
    """Smallest scale per feature kind; settings given here add to or replace the defaults."""
    default_floor: float = Field(default=1.0, gt=0)
    """Smallest scale of a feature kind missing from ``floors``."""
    joint: bool = True
    """Whether the joint outlier model (an isolation forest over all features) runs."""
    joint_trees: int = Field(default=100, ge=1, le=10_000)
    """Trees in the isolation forest."""
    joint_margin: float = Field(default=0.05, ge=0)
    """A joint outlier scores below the lowest training score minus this margin."""
    joint_seed: int = Field(default=0, ge=0)
    """Seed of the isolation forest: the same training gives the same model."""
    enter_yellow: int = Field(default=3, ge=1)
    """Consecutive assessments at yellow or above before a green component turns yellow."""
    enter_red: int = Field(default=2, ge=1)
    """Consecutive red assessments before a component turns red."""
    leave: int = Field(default=10, ge=1)
    """Consecutive assessments below its level before a component steps down."""
    down_red: int = Field(default=2, ge=1)
    """Consecutive failed scrapes of a component that make it red (rule ``down``)."""
    stall_s: float = Field(default=15.0, gt=0)
    """Seconds a consumer with pending messages may go without acknowledging any before its
    component is red (rule ``stalled``)."""
    memory_red_factor: float = Field(default=3.0, gt=1)
    """Resident memory above this many times the largest training value is red (rule
    ``memory``)."""
    ignore: list[str] = Field(default_factory=list)
    """Feature names (shell patterns such as ``*/io_*``) that are never checked."""

    @field_validator("floors")
    @classmethod
    def _floors(cls, floors: dict[str, float]) -> dict[str, float]:
        for kind, floor in floors.items():
            if not floor > 0:
                raise ValueError(f"floor of {kind!r} must be greater than 0")
        return {**DEFAULT_FLOORS, **floors}

    def floor(self, feature: str) -> float:
        """The smallest scale of ``feature`` (by its kind)."""
        return self.floors.get(feature_kind(feature), self.default_floor)

    def ignored(self, feature: str) -> bool:
        """Whether ``feature`` matches one of the ``ignore`` patterns."""
        return any(fnmatch.fnmatchcase(feature, pattern) for pattern in self.ignore)


def load_rules(path: Path) -> DetectorConfig:
    """Read the ``[detector]`` table of ``path``; a mistake is a :class:`ConfigurationError`."""
    raw = read_toml(path, "rules")
    unknown = sorted(set(raw) - {"detector"})
    if unknown:
        raise ConfigurationError(f"rules {path}: {', '.join(unknown)}: unknown setting")
    table = raw.get("detector", {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"rules {path}: detector: must be a table")
    try:
        return DetectorConfig.model_validate(table)
    except ValidationError as exc:
        raise ConfigurationError(f"rules {path}: {problems(exc, 'detector.')}") from None
