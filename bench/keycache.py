"""Legal's evaluation key cache (``metrocloud.fhe.keycache``) with TAF 3 keys.

Measures, one thread:

- parsing one customer's keys (``EvaluationKeyCache.install`` of a customer not held);
- installing one that evicts another: clearing OpenFHE's key maps and putting back the
  kept customers' keys, then parsing;
- peak memory of a process that meets ``--customers`` customers in turn, twice, with a budget
  that holds two of them and with one that holds all (each in its own process).

Usage: ``python bench/keycache.py [--customers 6] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metrocloud.fhe.context import CustomerKeyPair, deserialize_context, serialize
from metrocloud.fhe.keycache import ENTRY_OVERHEAD_BYTES, EvaluationKeyCache, forget_evaluation_keys
from metrocloud.tariffs import PROGRAMS, load_program

CONFIG = {"thresholds_wh": [250, 1000], "prices_mct_per_kwh": [2000, 3000, 4000]}


def make_customers(folder: Path, count: int) -> list[tuple[str, Path]]:
    """``count`` TAF 3 customers: (key tag, file with context and keys as sent)."""
    program = load_program("taf3", PROGRAMS["taf3"].parameters, CONFIG)
    made = []
    for n in range(count):
        pair = CustomerKeyPair.for_program(program, 96)
        path = folder / f"customer-{n}.keys"
        context = serialize(pair.context)
        keys = pair.evaluation_keys_bytes()
        path.write_bytes(len(context).to_bytes(8, "big") + context + keys)
        made.append((pair.key_tag, path))
        forget_evaluation_keys()  # made elsewhere: none of them installed here
    return made


def read(path: Path) -> tuple[object, bytes]:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "big")
    return deserialize_context(raw[8 : 8 + size]), raw[8 + size :]


def timings(customers: list[tuple[str, Path]], repeat: int) -> dict[str, float]:
    """Median seconds to install a customer, and to install one that evicts another (the
    others kept are put back)."""
    loaded = [(tag, *read(path)) for tag, path in customers]
    keys_mb = len(loaded[0][2]) / 1e6
    installs, evictions = [], []
    for _ in range(repeat):
        cache: EvaluationKeyCache[None] = EvaluationKeyCache(10**12)
        for n, (tag, context, keys) in enumerate(loaded[:-1]):
            started = time.perf_counter()
            cache.install(f"c-{n}", tag, keys, context, None)
            installs.append(time.perf_counter() - started)
        # the last customer, with a budget that no longer holds the first: one eviction,
        # the others put back
        cache.budget_bytes = cache.held_bytes
        tag, context, keys = loaded[-1]
        started = time.perf_counter()
        cache.install("last", tag, keys, context, None)
        evictions.append(time.perf_counter() - started)
        assert cache.evictions == 1
        forget_evaluation_keys()
    return {
        "keys_mb": keys_mb,
        "install_s": statistics.median(installs),
        "eviction_s": statistics.median(evictions),
        "kept": len(loaded) - 2,
    }


def child(args: argparse.Namespace) -> None:
    """Meet every customer in turn, twice, within the budget; print peak memory."""
    customers = json.loads(args.child)
    budget = int(args.budget)
    cache: EvaluationKeyCache[None] = EvaluationKeyCache(budget)
    for _ in range(2):
        for n, (tag, path) in enumerate(customers):
            if cache.get(f"c-{n}", tag) is None:
                context, keys = read(Path(path))
                cache.install(f"c-{n}", tag, keys, context, None)
    # VmHWM, not ru_maxrss: the latter carries the parent's peak over the fork
    status = Path("/proc/self/status").read_text().splitlines()
    peak_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    print(json.dumps({"peak_mb": peak_mb, "evictions": cache.evictions, "held": len(cache)}))


def peak(customers: list[tuple[str, Path]], budget: int) -> dict[str, float]:
    listed = json.dumps([(tag, str(path)) for tag, path in customers])
    out = subprocess.run(
        [sys.executable, __file__, "--child", listed, "--budget", str(budget)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--budget", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.customers < 3:
        parser.error("--customers: at least 3")
    with tempfile.TemporaryDirectory(prefix="mc-bench-keys-") as tmp:
        customers = make_customers(Path(tmp), args.customers)
        t = timings(customers, args.repeat)
        one = customers[0][1].stat().st_size + ENTRY_OVERHEAD_BYTES
        two = peak(customers, 2 * one + 1)
        every = peak(customers, args.customers * one + 1)
    print(f"TAF 3 evaluation keys per customer: {t['keys_mb']:.1f} MB")
    print("| what | figure |")
    print("| --- | ---: |")
    print(f"| install a customer's keys (parse) | {t['install_s'] * 1000:.0f} ms |")
    print(f"| install one that evicts another ({t['kept']:.0f} kept, put back) | "
          f"{t['eviction_s'] * 1000:.0f} ms |")  # fmt: skip
    for label, r in (("two", two), ("all", every)):
        print(f"| peak memory, {args.customers} customers met twice, budget holds {label} "
              f"| {r['peak_mb']:.0f} MB ({r['evictions']:.0f} evictions, "
              f"{r['held']:.0f} held) |")  # fmt: skip


if __name__ == "__main__":
    main()
