"""The baseline: medians, robust scales with their floors, training ranges, and the joint
isolation-forest model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest  # type: ignore[import-untyped]

from metrocloud.detection.baseline import Baseline, JointModel
from metrocloud.detection.rules import DEFAULT_FLOORS, DetectorConfig

CONFIG = DetectorConfig()


def test_median_scale_and_range_per_feature() -> None:
    samples = [{"legal/in:x": v} for v in (10.0, 12.0, 14.0, 16.0, 100.0)]
    stats = Baseline.fit(samples, CONFIG).stats("legal/in:x")
    assert stats.median == 14.0
    assert stats.scale == pytest.approx(1.4826 * 2.0)  # MAD 2: the burst to 100 barely counts
    assert (stats.low, stats.high, stats.count) == (10.0, 100.0, 5)


def test_the_scale_never_falls_below_the_floor_of_the_kind() -> None:
    samples = [{"legal/cpu": 0.10, "legal/fds": 40.0, "legal/odd": 7.0} for _ in range(20)]
    baseline = Baseline.fit(samples, CONFIG)
    assert baseline.stats("legal/cpu").scale == 0.05
    assert baseline.stats("legal/fds").scale == 4.0
    assert baseline.stats("legal/odd").scale == 1.0  # a kind without a floor: the default
    assert baseline.z("legal/cpu", 0.40) == pytest.approx(6.0)


def test_a_feature_missing_from_some_samples_counts_where_present() -> None:
    samples = [{"legal/cpu": 0.1}, {"legal/cpu": 0.1, "legal/latency:legal": 0.2}, {}]
    baseline = Baseline.fit(samples, CONFIG)
    assert baseline.stats("legal/latency:legal").count == 1
    assert baseline.stats("legal/latency:legal").median == 0.2
    assert baseline.features == ("legal/cpu", "legal/latency:legal")


def test_a_feature_never_seen_in_training_is_judged_from_zero_by_its_floor() -> None:
    baseline = Baseline.fit([{"legal/cpu": 0.1}], CONFIG)
    stats = baseline.stats("legal/errors")
    assert (stats.median, stats.low, stats.high, stats.count) == (0.0, 0.0, 0.0, 0)
    assert stats.scale == 0.2
    assert baseline.z("legal/errors", 2.0) == pytest.approx(10.0)
    assert baseline.limit("legal/errors") == pytest.approx(0.1)  # 0 + 0.5 × 0.2


def test_the_limit_lies_above_the_largest_training_value() -> None:
    samples = [{"legal/cpu": v} for v in (0.1, 0.1, 0.1, 0.1, 0.7)]
    baseline = Baseline.fit(samples, CONFIG)
    assert baseline.limit("legal/cpu") == pytest.approx(0.7 + 0.5 * 0.6)


def test_values_that_are_not_finite_are_skipped() -> None:
    samples = [{"legal/cpu": v} for v in (0.1, math.nan, math.inf, -math.inf, 0.3)]
    stats = Baseline.fit(samples, CONFIG).stats("legal/cpu")
    assert stats.count == 2 and stats.median == pytest.approx(0.2)
    assert (stats.low, stats.high) == (0.1, 0.3)
    only_nan = Baseline.fit([{"legal/cpu": math.nan}], CONFIG)
    assert only_nan.features == ()


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
training_values = st.lists(
    st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf])), min_size=1, max_size=40
)


@given(training_values, st.sampled_from([*DEFAULT_FLOORS, "unknown"]), finite, finite)
def test_z_is_monotone_in_the_value_and_the_scale_never_below_the_floor(
    values: list[float], kind: str, a: float, b: float
) -> None:
    feature = f"legal/{kind}:x"
    baseline = Baseline.fit([{feature: v} for v in values], CONFIG)
    assert baseline.stats(feature).scale >= CONFIG.floor(feature)
    low, high = sorted((a, b))
    assert baseline.z(feature, low) <= baseline.z(feature, high)
    assert math.isfinite(baseline.z(feature, high))


def cube(seed: int, features: int, count: int = 60) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{f"c/in:{k}": float(rng.uniform(0, 10)) for k in range(features)} for _ in range(count)]


def test_the_joint_threshold_is_the_lowest_training_score_minus_the_margin() -> None:
    samples = cube(0, 4)
    baseline = Baseline.fit(samples, CONFIG)
    joint = JointModel.fit(baseline, samples, CONFIG)
    assert joint is not None and joint.features == baseline.features
    vectors = np.asarray([baseline.vector(joint.features, s) for s in samples])
    forest = IsolationForest(n_estimators=100, random_state=0, n_jobs=1).fit(vectors)
    lowest = float(np.min(forest.score_samples(vectors)))
    assert joint.threshold == pytest.approx(lowest - 0.05)
    assert not any(joint.is_outlier(s) for s in samples)


def test_a_combination_never_seen_in_training_is_a_joint_outlier() -> None:
    samples = cube(5, 4)
    baseline = Baseline.fit(samples, CONFIG)
    joint = JointModel.fit(baseline, samples, CONFIG)
    assert joint is not None
    corner = {f"c/in:{k}": 30.0 for k in range(4)}  # beyond every feature's range at once
    centre = {f"c/in:{k}": 5.0 for k in range(4)}
    assert joint.is_outlier(corner) and joint.score(corner) < joint.threshold
    assert not joint.is_outlier(centre)


def test_a_missing_value_counts_as_the_training_median() -> None:
    samples = cube(1, 3)
    baseline = Baseline.fit(samples, CONFIG)
    joint = JointModel.fit(baseline, samples, CONFIG)
    assert joint is not None
    median = baseline.stats("c/in:2").median
    partial = {"c/in:0": 9.0, "c/in:1": 1.0}
    assert joint.score(partial) == joint.score({**partial, "c/in:2": median})


def test_the_joint_model_is_the_same_for_the_same_seed() -> None:
    samples = cube(2, 3)
    baseline = Baseline.fit(samples, CONFIG)
    one, two = (JointModel.fit(baseline, samples, CONFIG) for _ in range(2))
    other = JointModel.fit(baseline, samples, DetectorConfig(joint_seed=7))
    assert one is not None and two is not None and other is not None
    probe = {"c/in:0": 8.0, "c/in:1": 2.0, "c/in:2": 5.0}
    assert one.threshold == two.threshold and one.score(probe) == two.score(probe)
    assert other.score(probe) != one.score(probe)


def test_the_joint_model_leaves_out_ignored_features() -> None:
    samples = cube(3, 3)
    config = DetectorConfig(ignore=["c/in:1"])
    joint = JointModel.fit(Baseline.fit(samples, config), samples, config)
    assert joint is not None and joint.features == ("c/in:0", "c/in:2")


@pytest.mark.parametrize(
    ("samples", "config"),
    [
        (cube(0, 4, count=9), CONFIG),  # fewer than 10 samples
        (cube(0, 1), CONFIG),  # a single feature
        (cube(0, 4), DetectorConfig(joint=False)),
        (cube(0, 2), DetectorConfig(ignore=["c/in:0"])),
    ],
)
def test_the_joint_model_is_off_with_too_little_to_learn_or_when_disabled(
    samples: list[dict[str, float]], config: DetectorConfig
) -> None:
    assert JointModel.fit(Baseline.fit(samples, config), samples, config) is None
