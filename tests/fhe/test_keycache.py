"""The evaluation key cache of a cloud process: customers' keys within a memory budget,
least recently used evicted, the others still working; and the ingress inspector keeps no
key it checked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from metrocloud.core.errors import Rejected
from metrocloud.fhe.context import (
    CustomerKeyPair,
    Encryptor,
    create_context,
    deserialize_ciphertext,
    deserialize_context,
    serialize,
)
from metrocloud.fhe.inspect import _check_registration
from metrocloud.fhe.keycache import (
    ENTRY_OVERHEAD_BYTES,
    EvaluationKeyCache,
    forget_evaluation_keys,
)
from metrocloud.tariffs import PROGRAMS

PARAMS = PROGRAMS["taf1"].parameters  # N = 8192, depth 1: small keys, quick to make


@contextlib.contextmanager
def key_maps_kept() -> Iterator[None]:
    """OpenFHE's key maps are process-wide: whatever other tests of this process installed
    is there again afterwards, and what happened inside is gone."""
    cc = create_context(PARAMS)
    automorphism = dict(cc.GetAllEvalAutomorphismKeys())
    mult = dict(cc.GetAllEvalMultKeys())
    try:
        yield
    finally:
        forget_evaluation_keys()
        for tag, keys in automorphism.items():
            cc.InsertEvalAutomorphismKey(keys, tag)
        for tag, vector in mult.items():
            cc.InsertEvalMultKey(vector, tag)


@pytest.fixture(autouse=True)
def own_key_maps() -> Iterator[None]:
    with key_maps_kept():
        forget_evaluation_keys()  # as in a cloud process: no customer's keys yet
        yield


@dataclass(frozen=True)
class Customer:
    pair: CustomerKeyPair
    keys: bytes  # the evaluation keys as the customer sends them

    @property
    def key_tag(self) -> str:
        return self.pair.key_tag


@pytest.fixture(scope="module")
def customers() -> dict[str, Customer]:
    """Four customers with a rotation key and a relinearization key each (~1 MB), made
    elsewhere: none of their keys is installed here."""
    with key_maps_kept():
        pairs = {
            name: CustomerKeyPair.generate(PARAMS, [1], relinearization=True)
            for name in ("alice", "bob", "carol", "dave")
        }
        return {name: Customer(pair, pair.evaluation_keys_bytes()) for name, pair in pairs.items()}


def installed_tags() -> set[str]:
    """The key tags that have keys in OpenFHE's maps now."""
    cc = create_context(PARAMS)
    return set(cc.GetAllEvalAutomorphismKeys()) | set(cc.GetAllEvalMultKeys())


def install(cache: EvaluationKeyCache[Any], name: str, customer: Customer) -> Any:
    """Install the customer's keys as legal does: its context and keys as sent."""
    context = deserialize_context(serialize(customer.pair.context))
    cache.install(name, customer.key_tag, customer.keys, context, context)
    return context


def square_rotated(context: Any, customer: Customer) -> list[int]:
    """1..4 encrypted by the gateway, squared (relinearized) and rotated by one in the
    cloud's context, decrypted by the customer."""
    pair = customer.pair
    blob = Encryptor(PARAMS, pair.context, pair.public_key).encrypt([1, 2, 3, 4])
    ct = deserialize_ciphertext(blob, PARAMS, pair.key_tag)
    return pair.decrypt(context.EvalRotate(context.EvalMult(ct, ct), 1), 4)


def cost(customer: Customer) -> int:
    return len(customer.keys) + ENTRY_OVERHEAD_BYTES


def test_the_least_recently_used_customer_is_evicted_and_the_others_still_compute(
    customers: dict[str, Customer],
) -> None:
    alice, bob, carol = customers["alice"], customers["bob"], customers["carol"]
    cache: EvaluationKeyCache[Any] = EvaluationKeyCache(2 * cost(alice) + 1000)
    install(cache, "alice", alice)
    install(cache, "bob", bob)
    assert cache.get("alice", alice.key_tag) is not None  # alice used after bob
    carol_context = deserialize_context(serialize(carol.pair.context))
    evicted = cache.install("carol", carol.key_tag, carol.keys, carol_context, carol_context)
    assert evicted == ["bob"]

    assert cache.customers() == ["alice", "carol"]
    assert cache.evictions == 1
    assert cache.held_bytes <= cache.budget_bytes
    assert cache.get("bob") is None
    tags = installed_tags()
    assert {alice.key_tag, carol.key_tag} <= tags and bob.key_tag not in tags
    for name, pair in (("alice", alice), ("carol", carol)):
        assert square_rotated(cache.get(name), pair) == [4, 9, 16, 0]
    with pytest.raises(RuntimeError):  # bob's keys are gone from the process
        square_rotated(cache.get("carol"), bob)

    install(cache, "bob", bob)  # bob comes back: parsed again, alice (now oldest) goes
    assert cache.customers() == ["carol", "bob"] and cache.evictions == 2
    assert square_rotated(cache.get("bob"), bob) == [4, 9, 16, 0]
    assert alice.key_tag not in installed_tags()


def test_new_keys_of_a_customer_replace_its_old_ones_without_an_eviction(
    customers: dict[str, Customer],
) -> None:
    alice, dave = customers["alice"], customers["dave"]
    cache: EvaluationKeyCache[Any] = EvaluationKeyCache(10 * cost(alice))
    install(cache, "alice", alice)
    context = install(cache, "alice", dave)  # alice's new keys (dave's stand in for them)
    assert cache.evictions == 0 and len(cache) == 1
    assert cache.get("alice", alice.key_tag) is None
    assert cache.get("alice", dave.key_tag) is context
    tags = installed_tags()
    assert dave.key_tag in tags and alice.key_tag not in tags
    assert square_rotated(context, dave) == [4, 9, 16, 0]


def test_a_customer_larger_than_the_budget_is_still_served_alone(
    customers: dict[str, Customer],
) -> None:
    alice, bob = customers["alice"], customers["bob"]
    cache: EvaluationKeyCache[Any] = EvaluationKeyCache(1000)
    install(cache, "alice", alice)
    install(cache, "bob", bob)
    assert cache.customers() == ["bob"] and cache.evictions == 1
    assert square_rotated(cache.get("bob"), bob) == [4, 9, 16, 0]


def test_customers_without_keys_are_bounded_by_their_overhead() -> None:
    pairs = [CustomerKeyPair.generate(PARAMS, []) for _ in range(4)]
    cache: EvaluationKeyCache[Any] = EvaluationKeyCache(3 * cost(Customer(pairs[0], b"")) + 500)
    for n, pair in enumerate(pairs):
        install(cache, f"meter-{n}", Customer(pair, pair.evaluation_keys_bytes()))
    assert cache.customers() == ["meter-1", "meter-2", "meter-3"]
    assert cache.evictions == 1


def test_keys_that_do_not_parse_leave_nothing_behind_and_the_kept_customers_working(
    customers: dict[str, Customer],
) -> None:
    alice, bob, carol = customers["alice"], customers["bob"], customers["carol"]
    cache: EvaluationKeyCache[Any] = EvaluationKeyCache(10 * cost(alice))
    install(cache, "alice", alice)
    with pytest.raises(Rejected) as refused:
        cache.install("bob", bob.key_tag, b"\x93junk", alice.pair.context, None)
    assert refused.value.reason == "malformed-evaluation-keys"
    # carol's keys sent as bob's: they hold no key for bob's tag
    with pytest.raises(RuntimeError):
        cache.install("bob", bob.key_tag, carol.keys, alice.pair.context, None)
    assert cache.customers() == ["alice"]
    assert installed_tags() == {alice.key_tag}
    assert square_rotated(cache.get("alice"), alice) == [4, 9, 16, 0]


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        EvaluationKeyCache(0)


def test_the_inspector_keeps_none_of_the_keys_it_checked(
    customers: dict[str, Customer],
) -> None:
    alice = customers["alice"]
    verdict = _check_registration(
        serialize(alice.pair.context),
        serialize(alice.pair.public_key),
        alice.keys,
        PARAMS.to_dict(),
        alice.key_tag,
    )
    assert verdict is None
    assert alice.key_tag not in installed_tags()
