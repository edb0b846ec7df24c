"""The anomaly detector: one assessment of every component per round of scrapes.

Each round the cloud service hands over an :class:`Observation`: the features of every
component it could scrape, the components it could not scrape, the consumers that stand
still, and the software the components run. The detector answers with an
:class:`Assessment`: a level per component with a finding, and the causes behind it.

Rules (``docs/anomaly-rules.md`` gives them with their settings):

* ``down`` (red): a component could not be scraped ``down_red`` rounds in a row;
* ``stalled`` (red): a consumer of the component has had messages pending for ``stall_s``
  seconds without acknowledging any;
* ``memory`` (red): the component's resident memory is above ``memory_red_factor`` times
  the largest value seen in training;
* ``z-score`` (yellow): a feature's smoothed value lies more than ``z_yellow`` robust
  scales above its training median, and above the largest training value by a margin;
  only values above normal count (a quieter component is no anomaly);
* ``joint-outlier`` (yellow): the isolation forest finds the whole smoothed sample unlike
  any training sample.

The first three apply from the first round; the last two once the baseline is learnt. The
baseline belongs to the software the components run: when that changes (a tariff program
is installed or removed) the detector starts to learn anew.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from metrocloud.detection.baseline import Baseline, JointModel
from metrocloud.detection.features import Software
from metrocloud.detection.rules import DetectorConfig, Level, feature_component, feature_kind

RULE_LEVELS: dict[str, Level] = {
    "down": Level.RED,
    "stalled": Level.RED,
    "memory": Level.RED,
    "z-score": Level.YELLOW,
    "joint-outlier": Level.YELLOW,
}
"""The level each rule gives the component it finds."""

MAX_CAUSES = 5
"""At most this many causes per component in an assessment (the most severe)."""
MEMORY_KIND = "rss_mb"


@dataclass(frozen=True)
class Observation:
    """What one round of scrapes found.

    ``context`` is the software the components run (:func:`.software_context`). A change
    of it counts only in a round where no component is down: the software of a component
    that does not answer is unknown, not gone. An empty context is no news either.
    """

    time: float
    features: dict[str, float]
    down: frozenset[str] = frozenset()
    stalled: dict[str, float] = field(default_factory=dict)
    context: frozenset[Software] = frozenset()


@dataclass(frozen=True)
class Cause:
    """One finding: which rule found what in which component."""

    component: str
    rule: str
    feature: str = ""
    value: float = 0.0
    median: float = 0.0
    z: float = 0.0

    @property
    def level(self) -> Level:
        """The level this cause gives its component."""
        return RULE_LEVELS[self.rule]

    def metrics(self) -> dict[str, float]:
        """The numbers behind the finding, flat, for the logbook."""
        if self.rule == "down":
            return {f"{self.component}/down_scrapes": self.value}
        if self.rule == "stalled":
            return {f"{self.component}/stalled_s": self.value}
        return {
            self.feature: self.value,
            f"{self.feature}:median": self.median,
            f"{self.feature}:z": self.z,
        }


@dataclass(frozen=True)
class Assessment:
    """The detector's answer to one observation.

    ``levels`` names only the components with a finding; every other one is green.
    ``training`` is true when the observation went into the baseline rather than being
    checked against it. ``retrained`` says why the detector started to learn anew with this
    observation.
    """

    time: float
    training: bool
    levels: dict[str, Level]
    causes: list[Cause]
    retrained: str | None = None

    @property
    def system(self) -> Level:
        """The worst level of any component."""
        return max(self.levels.values(), default=Level.GREEN)


class Detector:
    """Learns the baseline, then checks every observation against it."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._components: set[str] = set()
        self._down_rounds: dict[str, int] = {}
        self._context: frozenset[Software] | None = None
        self.retrain("start")

    @property
    def training(self) -> bool:
        """Whether the baseline is still being learnt."""
        return self._baseline is None

    @property
    def components(self) -> frozenset[str]:
        """Every component ever seen in a feature, as down, or as stalled."""
        return frozenset(self._components)

    @property
    def baseline(self) -> Baseline | None:
        """The learnt baseline; ``None`` while training."""
        return self._baseline

    @property
    def reason(self) -> str:
        """Why the current baseline (or training window) started."""
        return self._reason

    def retrain(self, reason: str) -> None:
        """Drop the baseline and the smoothing windows and start a new training window."""
        self._reason = reason
        self._baseline: Baseline | None = None
        self._joint: JointModel | None = None
        self._training: list[dict[str, float]] = []
        self._training_raw: list[dict[str, float]] = []
        self._training_start: float | None = None
        self._windows: dict[str, deque[float]] = {}

    def observe(self, obs: Observation) -> Assessment:
        """Assess one round of scrapes."""
        retrained = self._follow_context(obs.context, bool(obs.down))
        self._components.update(feature_component(f) for f in obs.features)
        self._components.update(obs.down, obs.stalled)
        features = self._usable(obs)
        smoothed = self._smooth(features)
        causes = self._down(obs.down) + self._stalled(obs.stalled) + self._memory(features)
        training = self.training
        if training:
            self._learn(obs.time, smoothed, features)
        else:
            causes += self._z_scores(smoothed) + self._joint_outlier(smoothed)
        causes = _ranked(causes)
        return Assessment(obs.time, training, _levels(causes), causes, retrained)

    def _follow_context(self, context: frozenset[Software], anyone_down: bool) -> str | None:
        """Start to learn anew when the software changed. The software of a component that
        did not answer is unknown, not gone: a change counts only in a full round."""
        if not context or (anyone_down and self._context is not None):
            return None
        if self._context is None or self._context == context:
            self._context = context
            return None
        self._context = context
        reason = "the software the components run changed"
        self.retrain(reason)
        return reason

    def _usable(self, obs: Observation) -> dict[str, float]:
        """The finite values of components that were scraped this round."""
        return {
            feature: value
            for feature, value in obs.features.items()
            if math.isfinite(value) and feature_component(feature) not in obs.down
        }

    def _smooth(self, features: Mapping[str, float]) -> dict[str, float]:
        """Each present feature's mean over its last ``smoothing`` present values."""
        smoothed = {}
        for feature, value in features.items():
            window = self._windows.get(feature)
            if window is None:
                window = self._windows[feature] = deque(maxlen=self.config.smoothing)
            window.append(value)
            smoothed[feature] = sum(window) / len(window)
        return smoothed

    def _learn(self, now: float, smoothed: dict[str, float], features: dict[str, float]) -> None:
        """Keep one training sample. The per-feature baseline learns the smoothed values,
        which are what the rules check later: a short burst in training does not raise the
        bar for a sustained rise. The joint model learns the raw samples, whose wider spread
        keeps it to combinations far from anything seen."""
        if not features:
            return
        if self._training_start is None:
            self._training_start = now
        self._training.append(smoothed)
        self._training_raw.append(features)
        enough_time = now - self._training_start >= self.config.training_s
        if enough_time and len(self._training) >= self.config.min_training_samples:
            self._baseline = Baseline.fit(self._training, self.config)
            self._joint = JointModel.fit(self._baseline, self._training_raw, self.config)
            self._training, self._training_raw = [], []

    def _down(self, down: frozenset[str]) -> list[Cause]:
        for component in list(self._down_rounds):
            if component not in down:
                del self._down_rounds[component]
        causes = []
        for component in sorted(down):
            rounds = self._down_rounds[component] = self._down_rounds.get(component, 0) + 1
            if rounds >= self.config.down_red:
                causes.append(Cause(component, "down", value=float(rounds)))
        return causes

    def _stalled(self, stalled: Mapping[str, float]) -> list[Cause]:
        return [
            Cause(component, "stalled", value=float(seconds))
            for component, seconds in sorted(stalled.items())
            if seconds >= self.config.stall_s
        ]

    def _memory(self, features: Mapping[str, float]) -> list[Cause]:
        if self._baseline is None:
            return []
        causes = []
        for feature, value in features.items():
            if feature_kind(feature) != MEMORY_KIND or self.config.ignored(feature):
                continue
            stats = self._baseline.stats(feature)
            if stats.count and value > self.config.memory_red_factor * stats.high:
                causes.append(self._cause(feature, "memory", value))
        return causes

    def _z_scores(self, smoothed: Mapping[str, float]) -> list[Cause]:
        assert self._baseline is not None
        baseline = self._baseline
        return [
            self._cause(feature, "z-score", value)
            for feature, value in smoothed.items()
            if not self.config.ignored(feature)
            and baseline.z(feature, value) > self.config.z_yellow
            and value > baseline.limit(feature)
        ]

    def _joint_outlier(self, smoothed: Mapping[str, float]) -> list[Cause]:
        if self._joint is None or not self._joint.is_outlier(smoothed):
            return []
        assert self._baseline is not None
        baseline = self._baseline
        present = [f for f in self._joint.features if f in smoothed]
        if not present:
            return []
        worst = max(present, key=lambda f: abs(baseline.z(f, smoothed[f])))
        return [self._cause(worst, "joint-outlier", smoothed[worst])]

    def _cause(self, feature: str, rule: str, value: float) -> Cause:
        assert self._baseline is not None
        median = self._baseline.stats(feature).median
        z = self._baseline.z(feature, value)
        return Cause(feature_component(feature), rule, feature, value, median, z)


def _ranked(causes: Iterable[Cause]) -> list[Cause]:
    """Most severe first, then by z-score; at most :data:`MAX_CAUSES` per component."""
    ordered = sorted(causes, key=lambda c: (-c.level, -c.z, c.component, c.rule, c.feature))
    kept: list[Cause] = []
    per_component: dict[str, int] = {}
    for cause in ordered:
        count = per_component.get(cause.component, 0)
        if count < MAX_CAUSES:
            kept.append(cause)
            per_component[cause.component] = count + 1
    return kept


def _levels(causes: Iterable[Cause]) -> dict[str, Level]:
    levels: dict[str, Level] = {}
    for cause in causes:
        levels[cause.component] = max(levels.get(cause.component, Level.GREEN), cause.level)
    return levels
