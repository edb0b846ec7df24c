"""The level each component shows: assessments held back until they repeat (hysteresis).

One assessment is not enough to change a component's level; a level that flips back and
forth with every scrape tells an operator nothing. Per component the state machine counts
consecutive assessments:

* it enters red after ``enter_red`` red assessments in a row;
* a green component enters yellow after ``enter_yellow`` assessments in a row at yellow or
  red. If the latest of them is red and could still make the component red sooner than
  the state machine allows a second change, it waits: red follows once ``enter_red`` reds
  have been seen, yellow at the first assessment that is not red;
* it steps down after ``leave`` assessments in a row below its level, to the highest level
  among them; counting starts anew after every change of level.

So a component changes level at most once in ``min(enter_yellow, enter_red, leave)``
assessments. A component missing from an assessment counts as green.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metrocloud.detection.detector import Assessment, Cause
from metrocloud.detection.rules import DetectorConfig, Level

RECOVERED = "recovered"


@dataclass(frozen=True)
class Transition:
    """A component changed level."""

    component: str
    previous: Level
    level: Level
    time: float
    causes: list[Cause]
    rule: str
    """The rule of the first cause, or ``recovered`` when stepping down with no cause."""


@dataclass
class _Track:
    """One component's level and its counts of consecutive assessments."""

    level: Level = Level.GREEN
    red_run: int = 0
    """Consecutive red assessments, up to now."""
    up_run: int = 0
    """Consecutive assessments at yellow or red, up to now."""
    below_run: int = 0
    """Consecutive assessments below ``level`` since the last change of level."""
    below_max: Level = Level.GREEN
    """The highest level among those."""
    yellow_due: bool = False
    """Enough assessments at yellow or red were seen; yellow waits on a red run."""
    causes: list[Cause] = field(default_factory=list)
    """The causes of the latest assessment with any."""

    def count(self, seen: Level) -> None:
        self.red_run = self.red_run + 1 if seen == Level.RED else 0
        self.up_run = self.up_run + 1 if seen >= Level.YELLOW else 0
        if seen < self.level:
            self.below_run += 1
            self.below_max = max(self.below_max, seen)
        else:
            self.below_run = 0
            self.below_max = Level.GREEN

    def move(self, level: Level) -> None:
        self.level = level
        self.below_run = 0
        self.below_max = Level.GREEN
        self.yellow_due = False


class StateMachine:
    """Per component the level shown, changed only by repeated assessments."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._tracks: dict[str, _Track] = {}
        self._gap = min(config.enter_yellow, config.enter_red, config.leave)

    @property
    def levels(self) -> dict[str, Level]:
        """The level of every component that has been assessed with a finding."""
        return {component: track.level for component, track in self._tracks.items()}

    @property
    def system(self) -> Level:
        """The worst level of any component."""
        return max((t.level for t in self._tracks.values()), default=Level.GREEN)

    def update(self, assessment: Assessment) -> list[Transition]:
        """Count ``assessment`` in; the changes of level it brings about."""
        by_component: dict[str, list[Cause]] = {}
        for cause in assessment.causes:
            by_component.setdefault(cause.component, []).append(cause)
        for component in assessment.levels:
            self._tracks.setdefault(component, _Track())
        transitions = []
        for component, track in sorted(self._tracks.items()):
            seen = assessment.levels.get(component, Level.GREEN)
            causes = by_component.get(component, [])
            if causes:
                track.causes = causes
            transition = self._step(component, track, seen, causes, assessment.time)
            if transition is not None:
                transitions.append(transition)
        return transitions

    def _step(
        self, component: str, track: _Track, seen: Level, causes: list[Cause], time: float
    ) -> Transition | None:
        track.count(seen)
        target = self._target(track)
        if target is None:
            return None
        previous = track.level
        track.move(target)
        if target > previous:
            causes = causes or track.causes
        rule = causes[0].rule if causes else RECOVERED
        return Transition(component, previous, target, time, list(causes), rule)

    def _target(self, track: _Track) -> Level | None:
        config = self.config
        if track.level < Level.RED and track.red_run >= config.enter_red:
            return Level.RED
        if track.level == Level.GREEN and track.up_run >= config.enter_yellow:
            track.yellow_due = True
        if track.yellow_due and track.red_run <= config.enter_red - self._gap:
            return Level.YELLOW
        if track.level > Level.GREEN and track.below_run >= config.leave:
            return track.below_max
        return None
