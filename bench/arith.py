"""Micro-benchmark of ``metrocloud.fhe.arith`` on BFV, and the parameter search behind it.

``python bench/arith.py`` prints a Markdown table of 32-bit operations on bit-sliced values
(32 bit ciphertexts per value): add (``from_bits`` of both, then add), ciphertext x
ciphertext multiply, and compare (``ge`` of two encrypted 32-bit values), plus the 13-bit
comparison with a plaintext threshold that TAF 3 uses. Times are per ciphertext (every slot
at once) and per value (divided by the slot count), with 1 and with 2 threads; each thread
count runs in its own process because OpenMP reads ``OMP_NUM_THREADS`` when ``openfhe`` is
imported. Every result is decrypted and checked against the plaintext reference.

``python bench/arith.py --params`` runs the parameter search: which (N, depth, t) decrypts
``ge_plain`` over 13 bits, then indicator x value, then a plaintext mask, correctly in every
slot, and how many extra levels are left.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchlib import machine, timed

T40 = 1_099_511_922_689  # the project's default t: prime, 1 mod 32768, just above 2**40

BENCH_N, BENCH_DEPTH = 16384, 6

PARAMETER_CANDIDATES: list[tuple[int, int, int]] = [
    (8192, 2, T40),
    (8192, 3, T40),
    (8192, 3, 65537),
    (16384, 4, T40),
    (16384, 5, T40),
    (16384, 6, T40),
    (16384, 7, T40),
    (16384, 4, 65537),
    (16384, 5, 65537),
    (16384, 5, 1_073_872_897),
    (16384, 6, 1_073_872_897),
]


class _Setup:
    """A key pair (with the relinearization key), an Arith and helpers, in a worker."""

    def __init__(self, n: int, depth: int, t: int) -> None:
        from metrocloud.fhe.arith import Arith
        from metrocloud.fhe.context import CustomerKeyPair
        from metrocloud.fhe.params import FheParameters

        self.params = FheParameters(
            plaintext_modulus=t, multiplicative_depth=depth, ring_dimension=n
        )
        t0 = time.perf_counter()
        self.keys = CustomerKeyPair.generate(self.params, [], relinearization=True)
        self.keygen_s = time.perf_counter() - t0
        self.cc = self.keys.context
        self.ar = Arith(self.cc, t)
        self.n, self.t = n, t

    def enc(self, values: list[int]) -> Any:
        return self.cc.Encrypt(self.keys.public_key, self.ar.vector(values))

    def dec(self, ct: Any) -> list[int]:
        return self.keys.decrypt(ct, self.n)


def worker_ops(repeat: int) -> dict[str, Any]:
    from metrocloud.fhe.arith import to_bits
    from metrocloud.fhe.context import serialize

    s = _Setup(BENCH_N, BENCH_DEPTH, T40)
    ar, ref, n = s.ar, s.ar.reference, s.n
    rnd = random.Random(7)
    a = [rnd.randrange(1 << 32) for _ in range(n)]
    b = [rnd.randrange(1 << 32) for _ in range(n)]
    b[: n // 8] = a[: n // 8]  # equal values too
    a_bits, b_bits = to_bits(a, 32), to_bits(b, 32)
    t0 = time.perf_counter()
    ca = [s.enc(x) for x in a_bits]
    encrypt_s = (time.perf_counter() - t0) / 32
    cb = [s.enc(x) for x in b_bits]
    rows: dict[str, float] = {}

    rows["32-bit add (from_bits of both, then add)"], got = timed(
        lambda: ar.add(ar.from_bits(ca), ar.from_bits(cb)), repeat
    )
    assert s.dec(got) == ref.add(a, b), "add"

    small_a = [x >> 12 for x in a]  # 20-bit factors: the product stays below t
    small_b = [x >> 12 for x in b]
    pa, pb = s.enc(small_a), s.enc(small_b)
    rows["ct x ct multiply, relinearized (20-bit factors)"], got = timed(
        lambda: ar.mul(pa, pb), repeat
    )
    assert s.dec(got) == ref.mul(small_a, small_b), "mul"

    rows["32-bit compare ge(a, b), both encrypted (depth 6)"], got = timed(
        lambda: ar.ge(ca, cb), max(1, repeat // 2)
    )
    assert s.dec(got) == ref.ge(a_bits, b_bits), "ge"

    e = [rnd.randrange(5001) for _ in range(n)]
    e_bits = to_bits(e, 13)
    ce = [s.enc(x) for x in e_bits]
    rows["13-bit ge_plain(x, 2500) (depth 4)"], got = timed(lambda: ar.ge_plain(ce, 2500), repeat)
    assert s.dec(got) == ref.ge_plain(e_bits, 2500), "ge_plain"

    mask = [rnd.randrange(2) for _ in range(n)]
    rows["plaintext mask multiply (one level)"], got = timed(lambda: ar.mul_plain(pa, mask), repeat)
    assert s.dec(got) == ref.mul_plain(small_a, mask), "mask"
    rows["add (one ciphertext pair)"], _ = timed(lambda: ar.add(pa, pb), repeat)
    return {
        "rows": rows,
        "slots": n,
        "keygen_s": s.keygen_s,
        "encrypt_s": encrypt_s,
        "ciphertext_bytes": len(serialize(pa)),
    }


def worker_params(n: int, depth: int, t: int) -> dict[str, Any]:
    """Does ge_plain(13 bits) -> x value -> x mask decrypt right? And how much slack is left
    (extra products with a fresh encryption of 1 that still decrypt right, at most 3)?"""
    from metrocloud.fhe.arith import to_bits

    out: dict[str, Any] = {"n": n, "depth": depth, "t": t}
    try:
        s = _Setup(n, depth, t)
    except (RuntimeError, ValueError) as exc:
        out["error"] = str(exc).split(":")[-1].strip()[:120]
        return out
    out["log2_q"] = round(math.log2(s.cc.GetModulus()))
    rnd = random.Random(1)
    x = [i % 8192 for i in range(n)]  # every 13-bit value
    value = [rnd.randrange(min(t // 2, 1 << 30)) for _ in range(n)]
    mask = [rnd.randrange(t) for _ in range(n)]
    bits = [s.enc(col) for col in to_bits(x, 13)]
    ar = s.ar
    stages: dict[str, bool] = {}
    slack = -1
    for threshold in (1, 2500, 4095, 5000, 8191):
        ind = ar.ge_plain(bits, threshold)
        want = [int(v >= threshold) for v in x]
        stages["ge_plain"] = stages.get("ge_plain", True) and s.dec(ind) == want
        y = ar.mul(ind, s.enc(value))
        want = [w * v % t for w, v in zip(want, value, strict=True)]
        stages["x value"] = stages.get("x value", True) and s.dec(y) == want
        y = ar.mul_plain(y, mask)
        want = [w * m % t for w, m in zip(want, mask, strict=True)]
        ok = s.dec(y) == want
        stages["x mask"] = stages.get("x mask", True) and ok
        extra = -1
        if ok:
            one = s.enc([1] * n)
            extra = 0
            while extra < 3:
                y = ar.mul(y, one)
                if s.dec(y) != want:
                    break
                extra += 1
        slack = extra if slack < 0 else min(slack, extra)
    out["stages"] = stages
    out["slack"] = slack
    from metrocloud.fhe.context import serialize

    out["ciphertext_bytes"] = len(serialize(bits[0]))
    out["mul_s"], _ = timed(lambda: ar.mul(bits[0], bits[1]), 5)
    out["ge_plain13_s"], _ = timed(lambda: ar.ge_plain(bits, 2500), 1)
    return out


def run_worker(args: list[str], threads: int) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


def circuit_counts() -> dict[str, str]:
    """Ciphertext products and depth of each benchmarked row (from the circuit simulator)."""
    from metrocloud.fhe.arith import Arith, SimulatedContext

    out: dict[str, str] = {}
    sim = SimulatedContext(T40, 2)
    ar = Arith(sim)
    a = [sim.encrypt([0, 1]) for _ in range(32)]
    rows: dict[str, Callable[[], Any]] = {
        "32-bit add (from_bits of both, then add)": lambda: ar.add(
            ar.from_bits(a), ar.from_bits(a)
        ),
        "ct x ct multiply, relinearized (20-bit factors)": lambda: ar.mul(a[0], a[1]),
        "32-bit compare ge(a, b), both encrypted (depth 6)": lambda: ar.ge(a, a),
        "13-bit ge_plain(x, 2500) (depth 4)": lambda: ar.ge_plain(a[:13], 2500),
        "plaintext mask multiply (one level)": lambda: ar.mul_plain(a[0], [1, 0]),
        "add (one ciphertext pair)": lambda: ar.add(a[0], a[1]),
    }
    for name, fn in rows.items():
        before = sim.ct_mults
        ct = fn()
        out[name] = f"{sim.ct_mults - before} / {ct.depth}"
    return out


def main_ops(repeat: int) -> None:
    results = {k: run_worker(["ops", str(repeat)], k) for k in (1, 2)}
    counts = circuit_counts()
    slots = results[1]["slots"]
    print(f"## metrocloud.fhe.arith: BFV N={BENCH_N}, depth {BENCH_DEPTH}, t={T40} (~2^40)\n")
    print(f"Machine: {machine()}; openfhe {_openfhe_version()}.\n")
    print(f"One ciphertext = {slots} slots = {slots} values at once (SIMD).\n")
    print(
        "| operation | per ciphertext, 1 thread | per ciphertext, 2 threads "
        "| per value, 1 thread | per value, 2 threads | ct x ct mults / depth |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name in results[1]["rows"]:
        one, two = results[1]["rows"][name], results[2]["rows"][name]
        print(
            f"| {name} | {fmt_s(one)} | {fmt_s(two)} | {fmt_s(one / slots)} "
            f"| {fmt_s(two / slots)} | {counts[name]} |"
        )
    r = results[1]
    print(
        f"\nKey generation (with the relinearization key): {fmt_s(r['keygen_s'])}; "
        f"encrypting one bit ciphertext: {fmt_s(r['encrypt_s'])}; "
        f"a ciphertext is {r['ciphertext_bytes'] / 1e6:.2f} MB "
        f"(a 32-bit bit-sliced vector: {32 * r['ciphertext_bytes'] / 1e6:.0f} MB). "
        "Median of repeated runs; every result was decrypted and checked. Products are "
        "exact modulo t, so 32-bit x 32-bit products do not fit: the multiply row uses "
        "20-bit factors."
    )


def main_params() -> None:
    print("## Parameter search: ge_plain (13 bits) -> x value (ct x ct) -> x plaintext mask\n")
    print(f"Machine: {machine()}; openfhe {_openfhe_version()}; 1 thread; HEStd_128_classic.\n")
    print(
        "| N | depth | t | log2 Q | ciphertext | ge_plain | x value | x mask "
        "| slack (extra ct x ct) | ct x ct | ge_plain 13 bits |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, depth, t in PARAMETER_CANDIDATES:
        r = run_worker(["params", str(n), str(depth), str(t)], 1)
        tb = f"{t} (2^{math.log2(t):.1f})"
        if "error" in r:
            print(f"| {n} | {depth} | {tb} | - | - | refused: {r['error']} | | | | | |")
            continue
        st = r["stages"]
        yes = {True: "right", False: "WRONG"}
        print(
            f"| {n} | {depth} | {tb} | {r['log2_q']} | {r['ciphertext_bytes'] / 1e6:.2f} MB "
            f"| {yes[st['ge_plain']]} | {yes[st['x value']]} | {yes[st['x mask']]} "
            f"| {r['slack'] if r['slack'] >= 0 else '-'} | {fmt_s(r['mul_s'])} "
            f"| {fmt_s(r['ge_plain13_s'])} |"
        )


def _openfhe_version() -> str:
    from importlib.metadata import version

    return version("openfhe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", action="store_true", help="run the parameter search")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "ops":
            print(json.dumps(worker_ops(int(rest[0]))))
        else:
            print(json.dumps(worker_params(*map(int, rest))))
    elif args.params:
        main_params()
    else:
        main_ops(args.repeat)


if __name__ == "__main__":
    main()
