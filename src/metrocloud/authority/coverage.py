"""How many confidential functionality checks are enough: the coverage model (issue #10).

The notified body checks the tariff software while it runs. It registers secret test meters
with secret reading series whose correct bills it knows, sends their readings through the
normal path at times it does not announce, and compares the bills. This module computes the
probability that such checks catch a manipulation, exactly, and estimates the same by
simulation.

The model:

* The cloud holds ``N`` meters. ``k`` of them are the authority's test meters. The cloud
  cannot tell a test meter from a real one.
* A manipulation touches ``m`` meters, ``m = round(f·N)`` (half up, at least 1: a
  manipulation touches at least one meter). The operator picks them without knowing which
  meters are test meters, so they are a uniformly random set of ``m`` of the ``N``.
* The manipulation is active in each billing period with probability ``a``, independently
  from period to period (``a = 1``: always on).
* The authority checks ``c`` billing periods (rounds) per year. In a round every test meter
  bills and is compared, or, with ``s`` given, a random set of ``s`` of the ``k`` test
  meters, drawn afresh each round.
* A round catches the manipulation when the manipulation is active in that period and at
  least one checked test meter is touched. Assumption: a touched meter's bill always differs
  from the expected bill. A manipulation that changes some bills only (say, only at
  certain consumption patterns) is caught less often than computed here.

Two regimes:

* Fixed targets (``fixed_targets=True``): the operator manipulates the same ``m`` meters
  in every period. Successive rounds are then not independent: the same test meters are
  touched or not in every round. With all ``k`` checked every round::

      P(within r rounds) = (1 - C(N-m, k) / C(N, k)) · (1 - (1-a)^r)

  However many rounds, this never exceeds ``1 - C(N-m, k) / C(N, k)``, the probability that
  at least one test meter is touched (:func:`p_touched`). With a subset of ``s`` test meters
  per round, let ``T`` be the number of touched test meters (hypergeometric: ``T`` of ``k``
  drawn from ``N`` with ``m`` touched). Given ``T = t`` a round catches with probability
  ``a · (1 - C(k-t, s) / C(k, s))``, independently from round to round, so::

      P(within r rounds) = Σ_t P(T = t) · (1 - (1 - a · (1 - C(k-t, s) / C(k, s)))^r)

* Fresh targets (``fixed_targets=False``): the operator picks a new random set of ``m``
  meters in every period. Rounds are then independent::

      p_round = a · (1 - C(N-m, n) / C(N, n)),   n = k, or s when given
      P(within r rounds) = 1 - (1 - p_round)^r

Every formula here is exact; the computation is in floating point (relative error about
1e-9 at worst for N up to 10^5). :func:`simulate` estimates the same probabilities by Monte
Carlo, without these formulas, and the tests compare the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_ROUNDS",
    "Scenario",
    "Table",
    "activity_table",
    "catch_table",
    "format_fraction",
    "format_probability",
    "meters_needed_table",
    "p_round",
    "p_touched",
    "p_within",
    "rounds_needed",
    "rounds_table",
    "simulate",
    "test_meters_needed",
    "touched_meters",
]

MAX_ROUNDS = 10**12
"""The most rounds :func:`rounds_needed` looks at (80 billion years of monthly checks)."""

FloatArray = npt.NDArray[np.float64]


# --- validation ---------------------------------------------------------------------------


def _integer(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"{low} ≤ {name}" + (f" ≤ {high}" if high is not None else "")
        raise ValueError(f"{name} must satisfy {bound}, got {number}")
    return number


def _probability(name: str, value: object, *, zero_allowed: bool, one_allowed: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    low_ok = number >= 0 if zero_allowed else number > 0
    high_ok = number <= 1 if one_allowed else number < 1
    if not (low_ok and high_ok):  # also refuses NaN
        low = "0 ≤" if zero_allowed else "0 <"
        high = "≤ 1" if one_allowed else "< 1"
        raise ValueError(f"{name} must satisfy {low} {name} {high}, got {value!r}")
    return number


def _fraction(f: object) -> float:
    return _probability("f", f, zero_allowed=False, one_allowed=True)


def _activity(a: object) -> float:
    return _probability("a", a, zero_allowed=False, one_allowed=True)


def _confidence(confidence: object) -> float:
    return _probability("confidence", confidence, zero_allowed=False, one_allowed=False)


def _meters(N: object, k: object) -> tuple[int, int]:
    n_meters = _integer("N", N, 1)
    return n_meters, _integer("k", k, 0, n_meters)


def _subset(s: object, k: int) -> int | None:
    """None when every test meter is checked each round (``s`` None or ``s = k``)."""
    if s is None:
        return None
    size = _integer("s", s, 0, k)
    return None if size == k else size


# --- exact probabilities ------------------------------------------------------------------


def touched_meters(N: int, f: float) -> int:
    """m = round(f·N), rounded half up, at least 1."""
    n_meters = _integer("N", N, 1)
    fraction = _fraction(f)
    return max(1, min(n_meters, math.floor(fraction * n_meters + 0.5)))


@lru_cache(maxsize=4096)
def _p_miss(N: int, m: int, n: int) -> float:
    """C(N-m, n) / C(N, n): none of n meters drawn from N, m of them touched, is touched.

    The product Π_{i<n} (N-m-i) / (N-i), taken in order (numpy's cumprod is sequential), so
    the value never increases with n or m, in floating point too.
    """
    if n == 0:
        return 1.0
    if n > N - m:
        return 0.0
    i = np.arange(n, dtype=np.float64)
    factors = (N - m - i) / (N - i)
    return float(np.cumprod(factors)[-1])


def _at_least_once(p: float, rounds: int) -> float:
    """1 - (1-p)^rounds, accurate for small p."""
    if rounds == 0 or p == 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return -math.expm1(rounds * math.log1p(-p))


@lru_cache(maxsize=256)
def _subset_terms(N: int, m: int, k: int, s: int) -> tuple[FloatArray, FloatArray]:
    """For t = 1 … min(k, m): P(T = t) and the chance q_t that s of the k test meters,
    drawn at random, include one of the t touched ones (fixed targets, subset checks)."""
    t_max = min(k, m)
    if t_max == 0 or s == 0:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty
    t = np.arange(1, t_max + 1, dtype=np.float64)
    # log C(m, t) + log C(N-m, k-t) - log C(N, k); C(N-m, k-t) = 0 when k-t > N-m
    rest = N - m
    log_pmf = np.array(
        [
            _log_comb(m, int(ti)) + _log_comb(rest, k - int(ti)) - _log_comb(N, k)
            if k - int(ti) <= rest
            else -math.inf
            for ti in t
        ],
        dtype=np.float64,
    )
    pmf: FloatArray = np.exp(log_pmf)
    # C(k-t, s) / C(k, s) = Π_{j<t} (k-j-s) / (k-j), zero once k-t < s
    j = np.arange(t_max, dtype=np.float64)
    steps = np.maximum(k - j - s, 0.0) / (k - j)
    q: FloatArray = np.subtract(1.0, np.cumprod(steps), dtype=np.float64)
    pmf.setflags(write=False)
    q.setflags(write=False)
    return pmf, q


def _log_comb(n: int, r: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)


def p_touched(N: int, k: int, f: float) -> float:
    """1 - C(N-m, k) / C(N, k): the chance that at least one of the k test meters is touched.

    The ceiling of the fixed-targets regime: no number of rounds catches more often.
    """
    n_meters, test = _meters(N, k)
    return 1.0 - _p_miss(n_meters, touched_meters(n_meters, f), test)


def p_round(N: int, k: int, f: float, a: float = 1.0, s: int | None = None) -> float:
    """The chance that one round catches the manipulation: a · (1 - C(N-m, n) / C(N, n)),
    n = k, or s when only s test meters are checked. The same in both regimes."""
    n_meters, test = _meters(N, k)
    active = _activity(a)
    size = _subset(s, test)
    checked = test if size is None else size
    return active * (1.0 - _p_miss(n_meters, touched_meters(n_meters, f), checked))


def p_within(
    N: int,
    k: int,
    f: float,
    rounds: int,
    a: float = 1.0,
    s: int | None = None,
    *,
    fixed_targets: bool = True,
) -> float:
    """The chance that at least one of ``rounds`` rounds catches the manipulation.

    ``fixed_targets``: the same m meters are touched in every period (rounds are not
    independent); otherwise a fresh random set each period (rounds are independent).
    """
    n_meters, test = _meters(N, k)
    count = _integer("rounds", rounds, 0)
    active = _activity(a)
    size = _subset(s, test)
    m = touched_meters(n_meters, f)
    if not fixed_targets:
        return _at_least_once(p_round(n_meters, test, f, active, size), count)
    if size is None:
        return (1.0 - _p_miss(n_meters, m, test)) * _at_least_once(active, count)
    if count == 0:
        return 0.0
    pmf, q = _subset_terms(n_meters, m, test, size)
    with np.errstate(divide="ignore"):
        miss_all = np.exp(count * np.log1p(-active * q))
    return math.fsum((pmf * (1.0 - miss_all)).tolist())


# --- how many rounds, how many test meters ------------------------------------------------


def _smallest(reaches: Callable[[int], bool], low: int, high: int) -> int | None:
    """The smallest n in [low, high] with reaches(n), for reaches monotone; None if none."""
    if not reaches(high):
        return None
    if reaches(low):
        return low
    lo, step = low, 1  # not reaches(lo)
    hi = min(low + step, high)
    while not reaches(hi):  # doubling: the answer is usually small
        lo, step = hi, 2 * step
        hi = min(low + step, high)
    while hi - lo > 1:  # not reaches(lo), reaches(hi)
        mid = (lo + hi) // 2
        if reaches(mid):
            hi = mid
        else:
            lo = mid
    return hi


def rounds_needed(
    N: int,
    k: int,
    f: float,
    confidence: float,
    a: float = 1.0,
    s: int | None = None,
    *,
    fixed_targets: bool,
) -> int | None:
    """The fewest rounds with p_within ≥ confidence; None when no number of rounds up to
    :data:`MAX_ROUNDS` reaches it (fixed targets: never when p_touched < confidence)."""
    n_meters, test = _meters(N, k)
    level = _confidence(confidence)
    active = _activity(a)
    size = _subset(s, test)

    def reaches(rounds: int) -> bool:
        chance = p_within(n_meters, test, f, rounds, active, size, fixed_targets=fixed_targets)
        return chance >= level

    return _smallest(reaches, 1, MAX_ROUNDS)


def test_meters_needed(
    N: int,
    f: float,
    confidence: float,
    rounds: int,
    a: float = 1.0,
    *,
    fixed_targets: bool,
) -> int | None:
    """The fewest test meters (all checked every round) with p_within ≥ confidence after
    ``rounds`` rounds; None when even k = N does not reach it (then 1 - (1-a)^rounds is
    below the confidence)."""
    n_meters = _integer("N", N, 1)
    level = _confidence(confidence)
    count = _integer("rounds", rounds, 0)
    active = _activity(a)

    def reaches(k: int) -> bool:
        chance = p_within(n_meters, k, f, count, active, fixed_targets=fixed_targets)
        return chance >= level

    return _smallest(reaches, 0, n_meters)


test_meters_needed.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --- simulation ---------------------------------------------------------------------------


def simulate(
    N: int,
    k: int,
    f: float,
    rounds: int,
    a: float = 1.0,
    s: int | None = None,
    fixed_targets: bool = True,
    trials: int = 100_000,
    seed: int | None = 0,
) -> float:
    """Monte Carlo estimate of :func:`p_within`: the fraction of ``trials`` runs in which
    some round catches the manipulation. Its standard error is √(p(1-p)/trials).

    Each run draws how many test meters are touched (numpy's hypergeometric generator, no
    N-sized arrays), then, round by round, whether the manipulation is active and which test
    meters are checked (fixed targets with a subset: how many of the touched test meters the
    subset holds; fresh targets: how many checked test meters the new touched set holds).
    """
    n_meters, test = _meters(N, k)
    count = _integer("rounds", rounds, 0)
    active = _activity(a)
    if s is not None:
        _integer("s", s, 0, test)
    runs = _integer("trials", trials, 1)
    m = touched_meters(n_meters, f)
    checked = test if s is None else int(s)
    if count == 0 or checked == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    caught = np.zeros(runs, dtype=bool)
    if fixed_targets:
        touched = rng.hypergeometric(m, n_meters - m, test, size=runs)
        for _ in range(count):
            on = rng.random(runs) < active
            if s is None:
                hit = touched > 0
            else:
                hit = rng.hypergeometric(touched, test - touched, checked) > 0
            caught |= on & hit
    else:
        for _ in range(count):
            on = rng.random(runs) < active
            hit = rng.hypergeometric(m, n_meters - m, checked, size=runs) > 0
            caught |= on & hit
    return float(np.count_nonzero(caught)) / runs


# --- scenarios and tables for the write-up ------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One set of parameters: N meters, k test meters, fraction f touched, activity a,
    optionally s test meters checked per round."""

    meters: int
    test_meters: int
    fraction: float
    active: float = 1.0
    subset: int | None = None

    def __post_init__(self) -> None:
        _meters(self.meters, self.test_meters)
        _fraction(self.fraction)
        _activity(self.active)
        _subset(self.subset, self.test_meters)

    @property
    def touched(self) -> int:
        return touched_meters(self.meters, self.fraction)

    def p_round(self) -> float:
        return p_round(self.meters, self.test_meters, self.fraction, self.active, self.subset)

    def p_within(self, rounds: int, *, fixed_targets: bool) -> float:
        return p_within(
            self.meters,
            self.test_meters,
            self.fraction,
            rounds,
            self.active,
            self.subset,
            fixed_targets=fixed_targets,
        )

    def rounds_needed(self, confidence: float, *, fixed_targets: bool) -> int | None:
        return rounds_needed(
            self.meters,
            self.test_meters,
            self.fraction,
            confidence,
            self.active,
            self.subset,
            fixed_targets=fixed_targets,
        )

    def simulate(
        self, rounds: int, *, fixed_targets: bool, trials: int = 100_000, seed: int | None = 0
    ) -> float:
        return simulate(
            self.meters,
            self.test_meters,
            self.fraction,
            rounds,
            self.active,
            self.subset,
            fixed_targets,
            trials,
            seed,
        )


@dataclass(frozen=True)
class Table:
    """A table of formatted cells; :meth:`markdown` renders it."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cells) + " |"

        rule = "| " + " | ".join("---" for _ in self.header) + " |"
        return "\n".join([line(self.header), rule, *(line(row) for row in self.rows)])


def format_probability(p: float) -> str:
    """A probability as a percentage that neither rounds a small chance to 0 nor a near
    certainty to 100 %: above 99.99 % (floating point may round such a value to 1) it
    reads "> 99.99 %"."""
    if p <= 0.0:
        return "0 %"
    percent = 100.0 * p
    if percent < 0.005:
        return "< 0.01 %"
    if percent > 99.99:
        return "> 99.99 %"
    if percent < 1.0 or percent >= 99.0:
        return f"{percent:.2f} %"
    return f"{percent:.1f} %"


def format_fraction(f: float) -> str:
    return f"{100.0 * f:g} %"


def _count(n: int | None) -> str:
    return "never" if n is None else f"{n:,}"


def _grid(
    meters: int,
    fractions: Sequence[float],
    test_meters: Sequence[int],
    active: float,
    cell: Callable[[Scenario], str],
) -> Table:
    """A row per k, a column per f, each cell ``cell`` of that scenario."""
    rows = tuple(
        (f"{k:,}", *(cell(Scenario(meters, k, f, active)) for f in fractions)) for k in test_meters
    )
    return Table(("test meters k", *(f"f = {format_fraction(f)}" for f in fractions)), rows)


def catch_table(
    meters: int,
    fractions: Sequence[float],
    test_meters: Sequence[int],
    rounds: int,
    *,
    fixed_targets: bool,
    active: float = 1.0,
) -> Table:
    """P(caught within ``rounds`` rounds): a row per k, a column per f."""
    return _grid(
        meters,
        fractions,
        test_meters,
        active,
        lambda s: format_probability(s.p_within(rounds, fixed_targets=fixed_targets)),
    )


def rounds_table(
    meters: int,
    fractions: Sequence[float],
    test_meters: Sequence[int],
    confidence: float,
    *,
    fixed_targets: bool,
    active: float = 1.0,
) -> Table:
    """The rounds needed to reach ``confidence``: a row per k, a column per f."""
    return _grid(
        meters,
        fractions,
        test_meters,
        active,
        lambda s: _count(s.rounds_needed(confidence, fixed_targets=fixed_targets)),
    )


def meters_needed_table(
    meters: int,
    fractions: Sequence[float],
    confidences: Sequence[float],
    rounds: int,
    active: float = 1.0,
) -> Table:
    """The test meters needed to reach each confidence within ``rounds`` rounds, both
    regimes: a row per f."""
    header = ["fraction f", "touched m"]
    for label in ("fixed", "fresh"):
        header += [f"{label}, {format_fraction(c)}" for c in confidences]
    rows = []
    for f in fractions:
        row = [format_fraction(f), f"{touched_meters(meters, f):,}"]
        for fixed in (True, False):
            row += [
                _count(test_meters_needed(meters, f, c, rounds, active, fixed_targets=fixed))
                for c in confidences
            ]
        rows.append(tuple(row))
    return Table(tuple(header), tuple(rows))


def activity_table(
    meters: int,
    fraction: float,
    test_meters: Sequence[int],
    activities: Sequence[float],
    rounds: int,
) -> Table:
    """P(caught within ``rounds`` rounds) for each activity a, both regimes: a row per k."""
    header = ["test meters k"]
    for label in ("fixed", "fresh"):
        header += [f"{label}, a = {a:g}" for a in activities]
    rows = []
    for k in test_meters:
        row = [f"{k:,}"]
        for fixed in (True, False):
            row += [
                format_probability(
                    Scenario(meters, k, fraction, a).p_within(rounds, fixed_targets=fixed)
                )
                for a in activities
            ]
        rows.append(tuple(row))
    return Table(tuple(header), tuple(rows))
