"""Tables for "How many checks are enough" (issue #10, docs/functionality-checks.md).

The coverage model of :mod:`metrocloud.authority.coverage`: N meters, k of them the
authority's secret test meters, a manipulation touching a fraction f of the meters, active in
a billing period with probability a, checked in ``rounds`` billing periods a year. Prints, as
Markdown:

* the probability of catching the manipulation within one round and within a year of monthly
  rounds, fixed targets (the same meters every period) and fresh targets (a new random set
  every period);
* the rounds needed for 95 % with fresh targets;
* the test meters needed for 95 % and 99 % within a year, and for 95 % against the size of
  the cloud;
* the effect of the activity a;
* a few of the exact figures next to a Monte Carlo estimate (± one standard error).

Every figure is computed from the exact formulas except the Monte Carlo column. Takes a few
seconds.

Usage: ``python bench/coverage.py [--meters N] [--rounds R] [--trials T] [--seed S]``.
"""

from __future__ import annotations

import argparse
import math

from metrocloud.authority.coverage import (
    Scenario,
    activity_table,
    catch_table,
    format_fraction,
    meters_needed_table,
    rounds_table,
    test_meters_needed,
)

FRACTIONS = (0.001, 0.01, 0.05, 0.10)
TEST_METERS = (1, 5, 10, 50, 100)
CONFIDENCES = (0.95, 0.99)
ACTIVITIES = (0.25, 0.5, 1.0)
ACTIVITY_FRACTION = 0.01
ACTIVITY_TEST_METERS = (10, 50, 100)
SIZES = (1_000, 10_000, 100_000)


def _count(n: int | None) -> str:
    return "never" if n is None else f"{n:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=10_000, help="meters in the cloud, N")
    parser.add_argument("--rounds", type=int, default=12, help="rounds (checked periods) a year")
    parser.add_argument("--trials", type=int, default=100_000, help="Monte Carlo runs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n, rounds = args.meters, args.rounds

    def section(title: str, body: str) -> None:
        print(f"**{title}**\n\n{body}\n")

    section(
        f"Caught within one round (both regimes), N = {n:,}",
        catch_table(n, FRACTIONS, TEST_METERS, 1, fixed_targets=True).markdown(),
    )
    fixed_year = catch_table(n, FRACTIONS, TEST_METERS, rounds, fixed_targets=True)
    same = fixed_year == catch_table(n, FRACTIONS, TEST_METERS, 1, fixed_targets=True)
    print(
        f"Fixed targets, a = 1: caught within {rounds} rounds "
        + ("= within one round, every cell of the table above.\n" if same else "differs:\n")
    )
    if not same:
        print(fixed_year.markdown() + "\n")
    section(
        f"Caught within {rounds} rounds, fresh targets, N = {n:,}",
        catch_table(n, FRACTIONS, TEST_METERS, rounds, fixed_targets=False).markdown(),
    )
    section(
        f"Rounds needed for 95 %, fresh targets, N = {n:,}",
        rounds_table(n, FRACTIONS, TEST_METERS, 0.95, fixed_targets=False).markdown(),
    )
    section(
        f"Test meters needed within {rounds} rounds, N = {n:,}",
        meters_needed_table(n, FRACTIONS, CONFIDENCES, rounds).markdown(),
    )
    lines = ["| meters N | " + " | ".join(f"f = {format_fraction(f)}" for f in FRACTIONS) + " |"]
    lines.append("| --- |" + " --- |" * len(FRACTIONS))
    for meters in SIZES:
        cells = [
            test_meters_needed(meters, f, 0.95, rounds, fixed_targets=fixed)
            for fixed in (True, False)
            for f in FRACTIONS
        ]
        half = len(FRACTIONS)
        lines.append(
            f"| {meters:,} | "
            + " | ".join(
                f"{_count(fixed)} / {_count(fresh)}"
                for fixed, fresh in zip(cells[:half], cells[half:], strict=True)
            )
            + " |"
        )
    section(
        f"Test meters needed for 95 % within {rounds} rounds against the size of the cloud "
        "(fixed / fresh targets)",
        "\n".join(lines),
    )
    section(
        f"Effect of the activity a: caught within {rounds} rounds, "
        f"f = {format_fraction(ACTIVITY_FRACTION)}, N = {n:,}",
        activity_table(n, ACTIVITY_FRACTION, ACTIVITY_TEST_METERS, ACTIVITIES, rounds).markdown(),
    )

    checks = [
        (Scenario(n, 10, 0.01), True),
        (Scenario(n, 10, 0.01), False),
        (Scenario(n, 50, 0.001, active=0.5), True),
        (Scenario(n, 50, 0.001, active=0.5), False),
        (Scenario(n, 50, 0.01, subset=10), True),
        (Scenario(n, 50, 0.01, subset=10), False),
    ]
    lines = [
        "| k | f | a | s | targets | exact | Monte Carlo |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario, fixed in checks:
        exact = scenario.p_within(rounds, fixed_targets=fixed)
        estimate = scenario.simulate(
            rounds, fixed_targets=fixed, trials=args.trials, seed=args.seed
        )
        error = math.sqrt(estimate * (1.0 - estimate) / args.trials)
        lines.append(
            f"| {scenario.test_meters} | {format_fraction(scenario.fraction)} "
            f"| {scenario.active:g} | {scenario.subset if scenario.subset is not None else 'all'} "
            f"| {'fixed' if fixed else 'fresh'} | {100 * exact:.2f} % "
            f"| {100 * estimate:.2f} % ± {100 * error:.2f} |"
        )
    section(
        f"Exact against Monte Carlo ({args.trials:,} runs), {rounds} rounds, N = {n:,}",
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
