"""The normal behaviour of the cloud, learnt from a training window, and how far a value is
from it.

Per feature the baseline keeps the median of its training values, a robust scale
(1.4826 × the median absolute deviation, never below the floor of the feature's kind) and
the smallest and largest training value. A value's robust z-score is its distance above
the median in scales. A feature never seen in training has median 0, smallest and largest
value 0, and the floor as its scale. Values that are not finite numbers are left out.

The joint model looks at all features together: an isolation forest, trained on the
z-scores of the training samples, tells how unusual a whole sample is, so that a
combination never seen in training shows even when each feature on its own looks normal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from metrocloud.detection.rules import DetectorConfig

if TYPE_CHECKING:
    from numpy.typing import NDArray

MAD_TO_SIGMA = 1.4826
"""Scales the median absolute deviation to the standard deviation of a normal distribution."""
Z_CLIP = 50.0
"""The joint model sees z-scores clipped to ±this: one huge value must not dominate."""
JOINT_MIN_SAMPLES = 10
JOINT_MIN_FEATURES = 2


@dataclass(frozen=True)
class FeatureStats:
    """What training saw of one feature."""

    median: float
    scale: float
    low: float
    high: float
    count: int


class Baseline:
    """Per feature the median, scale and range of the training values."""

    def __init__(self, stats: Mapping[str, FeatureStats], config: DetectorConfig) -> None:
        self._stats = dict(stats)
        self._config = config

    @classmethod
    def fit(cls, samples: Iterable[Mapping[str, float]], config: DetectorConfig) -> Baseline:
        """Learn from training samples; a feature may be missing from some of them."""
        values: dict[str, list[float]] = {}
        for sample in samples:
            for feature, value in sample.items():
                if math.isfinite(value):
                    values.setdefault(feature, []).append(value)
        stats = {f: _stats(v, config.floor(f)) for f, v in values.items()}
        return cls(stats, config)

    @property
    def features(self) -> tuple[str, ...]:
        """The features seen in training, sorted."""
        return tuple(sorted(self._stats))

    def stats(self, feature: str) -> FeatureStats:
        """What training saw of ``feature`` (the neutral defaults if it never appeared)."""
        found = self._stats.get(feature)
        if found is None:
            return FeatureStats(0.0, self._config.floor(feature), 0.0, 0.0, 0)
        return found

    def z(self, feature: str, value: float) -> float:
        """Robust z-score of ``value``: its distance from the training median, in scales."""
        stats = self.stats(feature)
        return (value - stats.median) / stats.scale

    def limit(self, feature: str) -> float:
        """The value ``feature`` must exceed to be anomalous besides its z-score: the largest
        training value plus ``margin × max(training range, scale)``."""
        stats = self.stats(feature)
        spread = max(stats.high - stats.low, stats.scale)
        return stats.high + self._config.margin * spread

    def vector(self, features: Sequence[str], sample: Mapping[str, float]) -> list[float]:
        """The clipped z-scores of ``sample`` over ``features``; a missing value counts 0."""
        found = []
        for feature in features:
            value = sample.get(feature)
            z = self.z(feature, value) if value is not None and math.isfinite(value) else 0.0
            found.append(min(max(z, -Z_CLIP), Z_CLIP))
        return found


def _stats(values: list[float], floor: float) -> FeatureStats:
    array = np.asarray(values, dtype=float)
    median = float(np.median(array))
    mad = float(np.median(np.abs(array - median)))
    scale = max(MAD_TO_SIGMA * mad, floor)
    return FeatureStats(median, scale, float(array.min()), float(array.max()), len(values))


class JointModel:
    """An isolation forest over the z-scores of all training features."""

    def __init__(
        self, baseline: Baseline, forest: Any, threshold: float, features: tuple[str, ...]
    ) -> None:
        self._baseline = baseline
        self._forest = forest
        self.threshold = threshold
        """A sample scoring below this is a joint outlier."""
        self.features = features
        """The features the model looks at, in the order of its input."""

    @classmethod
    def fit(
        cls,
        baseline: Baseline,
        samples: Sequence[Mapping[str, float]],
        config: DetectorConfig,
    ) -> JointModel | None:
        """Train on ``samples``; ``None`` when the joint model is off or there is too little
        to learn from (fewer than 10 samples or 2 features)."""
        features = tuple(f for f in baseline.features if not config.ignored(f))
        if not config.joint or len(samples) < JOINT_MIN_SAMPLES:
            return None
        if len(features) < JOINT_MIN_FEATURES:
            return None
        from sklearn.ensemble import IsolationForest  # type: ignore[import-untyped]

        forest = IsolationForest(
            n_estimators=config.joint_trees, random_state=config.joint_seed, n_jobs=1
        )
        matrix = _matrix(baseline, features, samples)
        forest.fit(matrix)
        lowest = float(np.min(forest.score_samples(matrix)))
        return cls(baseline, forest, lowest - config.joint_margin, features)

    def score(self, sample: Mapping[str, float]) -> float:
        """How normal ``sample`` is: lower is more unusual (isolation forest's score)."""
        matrix = _matrix(self._baseline, self.features, [sample])
        return float(self._forest.score_samples(matrix)[0])

    def is_outlier(self, sample: Mapping[str, float]) -> bool:
        """Whether ``sample`` scores below the lowest training score minus the margin."""
        return self.score(sample) < self.threshold


def _matrix(
    baseline: Baseline, features: Sequence[str], samples: Sequence[Mapping[str, float]]
) -> NDArray[np.float64]:
    return np.asarray([baseline.vector(features, s) for s in samples], dtype=np.float64)
