"""The detector on synthetic workloads: what training learns, which rules find what, and
that a normal workload, bursts included, stays green."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from metrocloud.detection.detector import Assessment, Cause, Detector, Observation
from metrocloud.detection.features import Scrape, derive, parse_scrape
from metrocloud.detection.hysteresis import StateMachine, Transition
from metrocloud.detection.progress import ConsumerProgress
from metrocloud.detection.rules import DetectorConfig, Level

COMPONENTS = ("legal", "tariff-taf1", "storage")
CONFIG = DetectorConfig()
TRAINING_ROUNDS = 61  # 120 s at one round every 2 s, both ends included
CONTEXT = frozenset({(c, "1.0.0", "c0ffee") for c in COMPONENTS})

Sample = dict[str, float]


class Workload:
    """Three components at work: noisy gauges and rates, and a CPU burst every 15 rounds."""

    def __init__(self, seed: int, burst: float = 0.3) -> None:
        self.rng = np.random.default_rng(seed)
        self.burst = burst
        self.round = 0

    def sample(self) -> Sample:
        found: Sample = {}
        for component in COMPONENTS:
            found.update(self.component(component))
        self.round += 1
        return found

    def component(self, name: str) -> Iterator[tuple[str, float]]:
        rng = self.rng
        bursting = self.round % 15 == 0
        messages = rng.poisson(40) / 2.0
        yield f"{name}/cpu", max(0.0, rng.normal(0.08, 0.01)) + (self.burst if bursting else 0)
        yield f"{name}/rss_mb", rng.normal(120.0, 0.5)
        yield f"{name}/fds", 40.0 + float(rng.integers(-1, 2))
        yield f"{name}/sockets", 12.0
        yield f"{name}/threads", 8.0
        yield f"{name}/io_read_kbs", abs(rng.normal(20.0, 10.0))
        yield f"{name}/io_write_kbs", abs(rng.normal(50.0, 20.0))
        yield f"{name}/in:legal.in.reading.*", messages
        yield f"{name}/out:legal.out.reading.*", messages
        yield f"{name}/rejections", 0.5 if rng.random() < 0.05 else 0.0
        yield f"{name}/errors", 0.0
        yield f"{name}/latency:{name}", float(rng.lognormal(np.log(0.01), 0.3))
        yield f"{name}/pending:{name}", float(rng.poisson(3))


class Run:
    """A detector and its state machine, fed one round every ``interval_s`` seconds."""

    def __init__(self, config: DetectorConfig = CONFIG) -> None:
        self.config = config
        self.detector = Detector(config)
        self.machine = StateMachine(config)
        self.time = 0.0
        self.transitions: list[Transition] = []

    def observe(
        self,
        features: Sample,
        down: frozenset[str] = frozenset(),
        stalled: dict[str, float] | None = None,
        context: frozenset[tuple[str, str, str]] = frozenset(),
    ) -> Assessment:
        obs = Observation(self.time, features, down, stalled or {}, context)
        self.time += self.config.interval_s
        assessment = self.detector.observe(obs)
        self.transitions += self.machine.update(assessment)
        return assessment

    def train(self, make: Callable[[], Sample]) -> int:
        rounds = 0
        while self.detector.training:
            self.observe(make(), context=CONTEXT)
            rounds += 1
        return rounds

    def until(self, steps: int, make: Callable[[], Sample]) -> list[Assessment]:
        return [self.observe(make(), context=CONTEXT) for _ in range(steps)]


def trained(
    seed: int = 0, config: DetectorConfig = CONFIG, burst: float = 0.3
) -> tuple[Run, Workload]:
    workload = Workload(seed, burst)
    run = Run(config)
    run.train(workload.sample)
    return run, workload


def changes(run: Run) -> list[tuple[str, Level, str]]:
    return [(t.component, t.level, t.rule) for t in run.transitions]


def test_training_lasts_training_s_and_min_training_samples() -> None:
    assert Run(DetectorConfig(joint=False)).train(Workload(0).sample) == TRAINING_ROUNDS
    slow = Run(DetectorConfig(interval_s=10.0, joint=False))
    assert slow.train(Workload(0).sample) == 20  # 120 s are 13 rounds: the count decides
    assert slow.detector.baseline is not None
    assert slow.detector.baseline.stats("legal/cpu").count == 20


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_normal_workload_with_bursts_stays_green(seed: int) -> None:
    run, workload = trained(seed, burst=0.6)
    assessments = run.until(300, workload.sample)
    assert not any(a.training for a in assessments)
    assert [c for a in assessments for c in a.causes] == []
    assert run.transitions == []
    assert run.machine.system == Level.GREEN


def test_a_sustained_cpu_step_turns_the_component_yellow() -> None:
    run, workload = trained()

    def stepped() -> Sample:
        return {**workload.sample(), "legal/cpu": 1.0}

    run.until(CONFIG.smoothing + CONFIG.enter_yellow, stepped)
    assert changes(run) == [("legal", Level.YELLOW, "z-score")]
    cause = run.transitions[0].causes[0]
    assert cause.feature == "legal/cpu" and cause.value > 0.5 and cause.z > CONFIG.z_yellow
    assert cause.median == pytest.approx(0.08, abs=0.01)
    run.until(CONFIG.leave + CONFIG.smoothing, workload.sample)
    assert changes(run)[-1] == ("legal", Level.GREEN, "recovered")


def test_an_ignored_feature_is_never_checked() -> None:
    run, workload = trained(config=DetectorConfig(ignore=["legal/c*"], joint=False))
    assessments = run.until(20, lambda: {**workload.sample(), "legal/cpu": 1.0})
    assert [c for a in assessments for c in a.causes] == []


def test_a_memory_ramp_turns_yellow_then_red() -> None:
    run, workload = trained()
    ramp = iter(np.arange(124.0, 600.0, 4.0))

    def growing() -> Sample:
        return {**workload.sample(), "storage/rss_mb": float(next(ramp))}

    run.until(90, growing)
    assert changes(run) == [
        ("storage", Level.YELLOW, "z-score"),
        ("storage", Level.RED, "memory"),
    ]
    yellow, red = run.transitions
    assert red.causes[0].value > CONFIG.memory_red_factor * 120.0
    assert red.causes[0].metrics()["storage/rss_mb:median"] == pytest.approx(120.0, abs=1.0)
    assert red.time > yellow.time


def test_a_component_down_two_rounds_is_red() -> None:
    run, workload = trained(config=DetectorConfig(joint=False))
    first = run.observe(workload.sample(), down=frozenset({"storage"}))
    assert first.levels == {}
    second = run.observe(workload.sample(), down=frozenset({"storage"}))
    assert second.levels == {"storage": Level.RED}
    assert second.causes == [Cause("storage", "down", value=2.0)]
    assert second.causes[0].metrics() == {"storage/down_scrapes": 2.0}
    run.observe(workload.sample(), down=frozenset({"storage"}))
    assert changes(run) == [("storage", Level.RED, "down")]
    assert run.observe(workload.sample()).levels == {}  # back: the count starts anew


def test_the_features_of_a_component_that_is_down_are_not_checked() -> None:
    run, workload = trained(config=DetectorConfig(joint=False))
    for _ in range(8):
        assessment = run.observe(
            {**workload.sample(), "storage/cpu": 5.0}, down=frozenset({"storage"})
        )
        assert all(c.rule == "down" for c in assessment.causes)


def test_down_and_stalled_apply_during_training() -> None:
    run = Run(DetectorConfig(joint=False))
    workload = Workload(0)
    progress = ConsumerProgress()
    stalled: list[Assessment] = []
    for _ in range(12):
        progress.update("legal", pending=40, ack_floor=7, now=run.time)
        stalled.append(run.observe(workload.sample(), stalled=progress.stalled(run.time)))
    assert run.detector.training
    assert [a.levels for a in stalled[:8]] == [{}] * 8  # 14 s stand still: not yet
    assert stalled[8].levels == {"legal": Level.RED}
    cause = stalled[8].causes[0]
    assert (cause.rule, cause.value) == ("stalled", 16.0)
    assert cause.metrics() == {"legal/stalled_s": 16.0}
    assert changes(run) == [("legal", Level.RED, "stalled")]
    down = [run.observe({}, down=frozenset({"tariff-taf1"})) for _ in range(2)]
    assert down[1].levels["tariff-taf1"] == Level.RED and down[1].training


def test_a_new_kind_of_error_turns_the_component_yellow() -> None:
    """End to end from the metrics page: a new labelled error series appears."""
    registry = CollectorRegistry()
    cpu = Counter("metrocloud_process_cpu_seconds", "cpu", registry=registry)
    received = Counter("metrocloud_messages_in", "in", ["subject"], registry=registry)
    errors = Counter("metrocloud_errors", "errors", ["kind"], registry=registry)
    Gauge("metrocloud_process_resident_memory_bytes", "rss", registry=registry).set(2**27)
    rng = np.random.default_rng(3)
    run = Run()
    previous: Scrape | None = None

    def round_() -> Sample:
        nonlocal previous
        cpu.inc(abs(rng.normal(0.2, 0.02)))
        received.labels("legal.in.reading.*").inc(int(rng.poisson(40)))
        text = generate_latest(registry).decode()
        scrape = parse_scrape("legal", text, run.time)
        features = derive(previous, scrape)
        previous = scrape
        return features

    run.train(round_)
    run.until(20, round_)
    assert run.transitions == []

    def failing() -> Sample:
        errors.labels("TimeoutError").inc(4)  # 2 errors a second
        return round_()

    run.until(CONFIG.smoothing + CONFIG.enter_yellow, failing)
    assert changes(run) == [("legal", Level.YELLOW, "z-score")]
    assert run.transitions[0].causes[0].feature == "legal/errors"


def test_new_software_starts_a_new_training() -> None:
    run, workload = trained(config=DetectorConfig(joint=False))
    assert run.detector.baseline is not None
    same = run.observe(workload.sample(), context=CONTEXT)
    assert same.retrained is None and not same.training
    nothing_known = run.observe(workload.sample())  # an empty context is no news
    assert nothing_known.retrained is None and not nothing_known.training
    storage_down = frozenset({"storage"})
    partial = frozenset(s for s in CONTEXT if s[0] != "storage")
    unknown = run.observe(workload.sample(), down=storage_down, context=partial)
    assert unknown.retrained is None and not unknown.training  # down is no software change
    updated = CONTEXT | {("tariff-taf2", "1.0.0", "beef")}
    changed = run.observe(workload.sample(), context=updated)
    assert changed.retrained is not None and changed.training
    assert run.detector.baseline is None and run.detector.training
    during = [run.observe({**workload.sample(), "legal/cpu": 1.0}, context=updated)]
    during += [run.observe(workload.sample(), context=updated) for _ in range(58)]
    assert all(a.training and a.causes == [] for a in during)
    last = run.observe(workload.sample(), context=updated)
    assert last.training and not run.detector.training  # the 61st sample completes it


def test_the_first_context_starts_no_new_training() -> None:
    run = Run(DetectorConfig(joint=False))
    assert run.observe({"legal/cpu": 0.1}, context=CONTEXT).retrained is None
    assert run.detector.reason == "start"


@pytest.mark.parametrize("seed", [1, 2])
def test_a_joint_outlier_is_yellow_for_the_component_that_strays_most(seed: int) -> None:
    rng = np.random.default_rng(seed)
    features = ("a/in:0", "a/in:1", "b/in:0", "b/in:1")
    run = Run(DetectorConfig(z_yellow=1000.0))  # leave the single features alone

    def normal() -> Sample:
        return {f: float(rng.uniform(0, 10)) for f in features}

    run.train(normal)
    assert run.until(5, normal)[-1].causes == []
    corner = {"a/in:0": 30.0, "a/in:1": 30.0, "b/in:0": 30.0, "b/in:1": 45.0}
    assessments = run.until(CONFIG.smoothing + CONFIG.enter_yellow, lambda: dict(corner))
    causes = [c for a in assessments for c in a.causes]
    assert causes and {c.rule for c in causes} == {"joint-outlier"}
    assert {c.feature for c in causes[-3:]} == {"b/in:1"}
    assert changes(run) == [("b", Level.YELLOW, "joint-outlier")]


def test_causes_come_most_severe_first_and_at_most_five_per_component() -> None:
    run, workload = trained(config=DetectorConfig(joint=False))
    surge = {f"legal/in:legal.in.{n}": 100.0 + 10 * n for n in range(7)}
    for _ in range(CONFIG.smoothing):
        assessment = run.observe({**workload.sample(), **surge}, down=frozenset({"storage"}))
    assert assessment.levels == {"legal": Level.YELLOW, "storage": Level.RED}
    assert assessment.causes[0].rule == "down"
    legal = [c for c in assessment.causes if c.component == "legal"]
    assert len(legal) == 5
    assert [c.feature for c in legal] == [f"legal/in:legal.in.{n}" for n in (6, 5, 4, 3, 2)]
    assert assessment.system == Level.RED


def test_the_components_seen() -> None:
    run = Run(DetectorConfig(joint=False))
    run.observe({"legal/cpu": 0.1}, down=frozenset({"storage"}), stalled={"tariff-taf1": 1.0})
    assert run.detector.components == {"legal", "storage", "tariff-taf1"}


def test_a_cause_gives_its_numbers_for_the_logbook() -> None:
    cause = Cause("legal", "z-score", "legal/cpu", 1.02, 0.08, 15.3)
    assert cause.level == Level.YELLOW
    assert cause.metrics() == {"legal/cpu": 1.02, "legal/cpu:median": 0.08, "legal/cpu:z": 15.3}
