"""The state machine: levels change only after repeated assessments, never faster than the
configured counts allow, and settle on a constant input."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.detection.detector import Assessment, Cause
from metrocloud.detection.hysteresis import StateMachine, Transition
from metrocloud.detection.rules import DetectorConfig, Level

G, Y, R = Level.GREEN, Level.YELLOW, Level.RED
CONFIG = DetectorConfig()


def assessment(time: float, levels: dict[str, Level]) -> Assessment:
    causes = []
    for component, level in levels.items():
        if level == Y:
            causes.append(Cause(component, "z-score", f"{component}/cpu", 1.0, 0.1, 18.0))
        elif level == R:
            causes.append(Cause(component, "down", value=2.0))
    found = {c: level for c, level in levels.items() if level > G}
    return Assessment(time, False, found, causes)


def run(machine: StateMachine, levels: list[Level], component: str = "legal") -> list[Transition]:
    transitions = []
    for time, level in enumerate(levels):
        transitions += machine.update(assessment(float(time), {component: level}))
    return transitions


def moves(transitions: list[Transition]) -> list[tuple[float, Level]]:
    return [(t.time, t.level) for t in transitions]


def test_green_turns_yellow_after_enter_yellow_assessments_in_a_row() -> None:
    assert run(StateMachine(CONFIG), [Y, Y, G, Y, Y]) == []
    transitions = run(StateMachine(CONFIG), [Y, Y, Y])
    assert moves(transitions) == [(2.0, Y)]
    (transition,) = transitions
    assert transition.previous == G and transition.rule == "z-score"
    assert transition.causes[0].feature == "legal/cpu"


def test_red_needs_enter_red_red_assessments_in_a_row() -> None:
    assert run(StateMachine(CONFIG), [R, G, R, G, R]) == []
    transitions = run(StateMachine(CONFIG), [G, R, R])
    assert moves(transitions) == [(2.0, R)] and transitions[0].rule == "down"
    assert moves(run(StateMachine(CONFIG), [Y, Y, Y, Y, R, R])) == [(2.0, Y), (5.0, R)]


def test_yellow_waits_while_a_red_run_may_still_make_it_red() -> None:
    # three findings in a row, the last red: red follows if the next is red too ...
    assert moves(run(StateMachine(CONFIG), [Y, Y, R, R])) == [(3.0, R)]
    # ... otherwise yellow, at the first assessment that is not red, with the red's causes
    transitions = run(StateMachine(CONFIG), [Y, Y, R, G])
    assert moves(transitions) == [(3.0, Y)]
    assert transitions[0].rule == "down"


def test_stepping_down_needs_leave_assessments_below_and_goes_to_the_highest() -> None:
    machine = StateMachine(CONFIG)
    run(machine, [R, R])
    assert machine.levels == {"legal": R}
    below = [G, Y, G, G, G, G, G, G, G]
    assert run(machine, below) == []
    transitions = run(machine, [G])
    assert moves(transitions) == [(0.0, Y)] and transitions[0].rule == "recovered"
    assert transitions[0].previous == R
    assert run(machine, [G] * 9) == []
    assert moves(run(machine, [G])) == [(0.0, G)]
    assert machine.system == G


def test_a_finding_at_the_level_starts_the_count_below_anew() -> None:
    machine = StateMachine(CONFIG)
    run(machine, [Y, Y, Y])
    assert run(machine, [G] * 9 + [Y] + [G] * 9) == []
    assert moves(run(machine, [G])) == [(0.0, G)]


def test_components_are_tracked_apart_and_missing_ones_count_green() -> None:
    machine = StateMachine(CONFIG)
    for time in range(3):
        machine.update(assessment(float(time), {"legal": R, "storage": Y}))
    assert machine.levels == {"legal": R, "storage": Y}
    assert machine.system == R
    transitions = []
    for time in range(3, 13):
        transitions += machine.update(assessment(float(time), {}))
    assert sorted((t.component, t.level) for t in transitions) == [("legal", G), ("storage", G)]
    assert machine.system == G


configs = st.builds(
    DetectorConfig,
    enter_yellow=st.integers(1, 5),
    enter_red=st.integers(1, 5),
    leave=st.integers(1, 8),
)
levels = st.sampled_from([G, Y, R])


@settings(max_examples=300)
@given(configs, st.lists(levels, max_size=80))
def test_no_component_changes_level_faster_than_the_counts_allow(
    config: DetectorConfig, sequence: list[Level]
) -> None:
    gap = min(config.enter_yellow, config.enter_red, config.leave)
    times = [t.time for t in run(StateMachine(config), sequence)]
    assert all(later - earlier >= gap for earlier, later in pairwise(times))


@settings(max_examples=300)
@given(configs, levels, st.lists(levels, max_size=40))
def test_a_constant_input_settles_on_its_level_and_stays(
    config: DetectorConfig, level: Level, prefix: list[Level]
) -> None:
    longest = max(config.enter_yellow, config.enter_red, config.leave)
    fresh = StateMachine(config)
    run(fresh, [level] * longest)
    assert fresh.levels.get("legal", G) == level
    assert run(fresh, [level] * 3 * longest) == []
    # after any history, two steps down may be due (red → yellow → green)
    used = StateMachine(config)
    run(used, prefix)
    run(used, [level] * 2 * longest)
    assert used.levels.get("legal", G) == level
    assert run(used, [level] * 3 * longest) == []


@settings(max_examples=300)
@given(configs, st.lists(levels, max_size=40), st.integers(0, 6))
def test_a_red_run_of_enter_red_always_ends_red(
    config: DetectorConfig, prefix: list[Level], extra: int
) -> None:
    machine = StateMachine(config)
    run(machine, [*prefix, *[R] * (config.enter_red + extra)])
    assert machine.levels["legal"] == R
