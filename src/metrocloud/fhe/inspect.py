"""Parsing untrusted FHE objects where a crash cannot hurt.

OpenFHE's deserializers trust their input: a ciphertext with a few flipped header bytes can
make them segfault or abort the whole process. Anything that comes from outside the cloud
(ciphertexts of a transmission, the context and keys of a registration) is therefore parsed
first in a separate worker process. If the worker dies, the input is refused as malformed and
a fresh worker takes over; the service itself keeps running. Only what passed this check is
ever deserialized inside a service. The worker keeps none of the evaluation keys it
checked (some 90 MB per comparison-tariff customer): it would otherwise grow with every
registration until it died of it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from metrocloud.core.errors import Rejected

Verdict = tuple[str, str] | None  # (reason, detail) of a refusal, or None


def _check_ciphertexts(blobs: Sequence[bytes], params: dict[str, Any], key_tag: str) -> Verdict:
    from metrocloud.fhe.context import deserialize_ciphertext
    from metrocloud.fhe.params import FheParameters

    try:
        for blob in blobs:
            deserialize_ciphertext(blob, FheParameters.from_dict(params), key_tag)
    except Rejected as exc:
        return exc.reason, exc.detail
    return None


def _check_registration(
    context: bytes, public_key: bytes, evaluation_keys: bytes, params: dict[str, Any], key_tag: str
) -> Verdict:
    from metrocloud.fhe.context import (
        deserialize_context,
        deserialize_public_key,
        load_evaluation_keys,
    )
    from metrocloud.fhe.keycache import forget_evaluation_keys
    from metrocloud.fhe.params import FheParameters

    expected = FheParameters.from_dict(params)
    try:
        cc = deserialize_context(context)
    except RuntimeError as exc:
        return "malformed-context", str(exc)
    if cc is None or (
        cc.GetRingDimension(),
        cc.GetPlaintextModulus(),
        cc.GetMultiplicativeDepth(),
    ) != (expected.ring_dimension, expected.plaintext_modulus, expected.multiplicative_depth):
        return "wrong-crypto-context", "the context does not match the declared parameters"
    try:
        pk = deserialize_public_key(public_key)
    except RuntimeError as exc:
        return "malformed-public-key", str(exc)
    if pk is None or pk.GetKeyTag() != key_tag:
        return "malformed-public-key", "the public key's tag differs from key_tag"
    try:
        rotations, _ = load_evaluation_keys(evaluation_keys)
        if rotations and not cc.GetExistingEvalAutomorphismKeyIndices(key_tag):
            return "malformed-evaluation-keys", "no rotation keys for the customer's key tag"
    except Rejected as exc:
        return exc.reason, exc.detail
    finally:  # checked, not kept: a worker that kept every customer's keys would only grow
        forget_evaluation_keys()
    return None


def _warm_up() -> None:
    import metrocloud.fhe.context  # noqa: F401  (imports OpenFHE once, ahead of traffic)


class Inspector:
    """A worker process that parses untrusted FHE objects for one service."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    async def _run(self, what: str, fn: Any, *args: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            verdict: Verdict = await loop.run_in_executor(self._executor(), fn, *args)
        except BrokenProcessPool:
            self.close()
            raise Rejected(f"malformed-{what}", f"the {what} crashed the FHE parser") from None
        if verdict is not None:
            raise Rejected(*verdict)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor(), _warm_up)

    async def ciphertexts(
        self, blobs: Sequence[bytes], params: dict[str, Any], key_tag: str
    ) -> None:
        """Raise :class:`Rejected` unless every blob is a ciphertext of ``params`` and key."""
        await self._run("ciphertext", _check_ciphertexts, list(blobs), params, key_tag)

    async def registration(
        self,
        context: bytes,
        public_key: bytes,
        evaluation_keys: bytes,
        params: dict[str, Any],
        key_tag: str,
    ) -> None:
        await self._run(
            "registration",
            _check_registration,
            context,
            public_key,
            evaluation_keys,
            params,
            key_tag,
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
