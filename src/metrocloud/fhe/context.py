"""OpenFHE crypto contexts, key pairs and (de)serialization.

The receiver creates the key pair; the gateway needs only the context and the public key;
the cloud needs the context and the evaluation (rotation) keys. No secret key ever leaves
:class:`CustomerKeyPair`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import openfhe as ofhe

from metrocloud.core.errors import Rejected
from metrocloud.fhe.params import FheParameters

Ciphertext = Any  # openfhe.Ciphertext: the binding has no type information

_FEATURES = (
    ofhe.PKESchemeFeature.PKE,
    ofhe.PKESchemeFeature.KEYSWITCH,
    ofhe.PKESchemeFeature.LEVELEDSHE,
)


def create_context(params: FheParameters) -> Any:
    """A fresh crypto context for ``params`` (checked to really have that ring dimension)."""
    p = ofhe.CCParamsBFVRNS()
    p.SetPlaintextModulus(params.plaintext_modulus)
    p.SetMultiplicativeDepth(params.multiplicative_depth)
    p.SetSecurityLevel(getattr(ofhe.SecurityLevel, params.security_level))
    p.SetMultiplicationTechnique(ofhe.MultiplicationTechnique.HPSPOVERQ)
    p.SetRingDim(params.ring_dimension)
    cc = ofhe.GenCryptoContext(p)
    for feature in _FEATURES:
        cc.Enable(feature)
    if cc.GetRingDimension() != params.ring_dimension:
        raise ValueError(
            f"security level {params.security_level} needs ring dimension "
            f"{cc.GetRingDimension()}, not {params.ring_dimension}"
        )
    return cc


def serialize(obj: Any) -> bytes:
    data = ofhe.Serialize(obj, ofhe.BINARY)
    assert isinstance(data, bytes)
    return data


def deserialize_context(data: bytes) -> Any:
    return ofhe.DeserializeCryptoContextString(data, ofhe.BINARY)


def deserialize_public_key(data: bytes) -> Any:
    return ofhe.DeserializePublicKeyString(data, ofhe.BINARY)


def deserialize_ciphertext(data: bytes, params: FheParameters, key_tag: str) -> Ciphertext:
    """Parse a ciphertext and check it belongs to ``params`` and the customer's key.

    Raises :class:`Rejected` with ``malformed-ciphertext`` or ``wrong-crypto-context``.
    """
    try:
        ct = ofhe.DeserializeCiphertextString(data, ofhe.BINARY)
    except (RuntimeError, ValueError, MemoryError) as exc:  # C++ errors as pybind11 maps them
        raise Rejected("malformed-ciphertext", f"cannot parse ciphertext: {exc}") from None
    cc = None if ct is None else ct.GetCryptoContext()
    if cc is None:  # OpenFHE returns None for some inputs (e.g. all zero bytes) instead of raising
        raise Rejected("malformed-ciphertext", "cannot parse ciphertext: no ciphertext in the data")
    if (
        cc.GetRingDimension() != params.ring_dimension
        or cc.GetPlaintextModulus() != params.plaintext_modulus
        or cc.GetMultiplicativeDepth() != params.multiplicative_depth
    ):
        raise Rejected(
            "wrong-crypto-context",
            f"ciphertext has N={cc.GetRingDimension()}, t={cc.GetPlaintextModulus()}, "
            f"depth={cc.GetMultiplicativeDepth()}; expected {params.parameters_id} "
            f"(N={params.ring_dimension}, t={params.plaintext_modulus}, "
            f"depth={params.multiplicative_depth})",
        )
    if ct.GetKeyTag() != key_tag:
        raise Rejected(
            "wrong-crypto-context",
            f"ciphertext was encrypted under key {ct.GetKeyTag()[:12]}…, "
            f"the customer's registered key is {key_tag[:12]}…",
        )
    return ct


def load_rotation_keys(data: bytes) -> None:
    """Install serialized rotation keys into OpenFHE's key map (indexed by key tag)."""
    try:
        ofhe.DeserializeEvalAutomorphismKeyString(data, ofhe.BINARY)
    except RuntimeError as exc:
        raise Rejected("malformed-evaluation-keys", f"cannot parse rotation keys: {exc}") from None


def load_relinearization_key(data: bytes) -> None:
    """Install a serialized relinearization key into OpenFHE's key map (by key tag)."""
    try:
        ofhe.DeserializeEvalMultKeyString(data, ofhe.BINARY)
    except RuntimeError as exc:
        raise Rejected("malformed-evaluation-keys", f"cannot parse the mult key: {exc}") from None


def load_evaluation_keys(blob: bytes) -> tuple[bool, bool]:
    """Install a receiver's evaluation keys (:meth:`CustomerKeyPair.evaluation_keys_bytes`);
    say which were there: (rotation or automorphism keys, relinearization key). A tariff
    program may need none (the register tariffs)."""
    try:
        keys = msgpack.unpackb(blob, raw=False)
        automorphism, mult = keys["automorphism"], keys["mult"]
    except (ValueError, KeyError, TypeError, msgpack.ExtraData) as exc:
        raise Rejected("malformed-evaluation-keys", f"not an evaluation key blob: {exc}") from None
    if not isinstance(automorphism, bytes) or not isinstance(mult, bytes):
        raise Rejected("malformed-evaluation-keys", "evaluation keys must be byte strings")
    if automorphism:
        load_rotation_keys(automorphism)
    if mult:
        load_relinearization_key(mult)
    return bool(automorphism), bool(mult)


@dataclass
class CustomerKeyPair:
    """A customer's FHE key pair. Lives only in the receiver (the secure display)."""

    params: FheParameters
    context: Any
    public_key: Any
    secret_key: Any
    rotation_steps: tuple[int, ...]

    relinearization: bool = False
    automorphisms: tuple[int, ...] = ()

    @classmethod
    def generate(
        cls,
        params: FheParameters,
        rotation_steps: Iterable[int],
        *,
        relinearization: bool = False,
        automorphisms: Iterable[int] = (),
    ) -> CustomerKeyPair:
        """A fresh key pair with the rotation keys for ``rotation_steps``, keys for further
        ``automorphisms`` (such as the row swap) and, when the tariff multiplies
        ciphertexts, the relinearization key."""
        cc = create_context(params)
        kp = cc.KeyGen()
        steps = tuple(sorted(set(rotation_steps) - {0}))
        if steps:
            cc.EvalRotateKeyGen(kp.secretKey, list(steps))
        extra = sorted(set(automorphisms))
        if extra:
            cc.InsertEvalAutomorphismKey(
                cc.EvalAutomorphismKeyGen(kp.secretKey, extra), kp.publicKey.GetKeyTag()
            )
        if relinearization:
            cc.EvalMultKeyGen(kp.secretKey)
        return cls(params, cc, kp.publicKey, kp.secretKey, steps, relinearization, tuple(extra))

    @classmethod
    def for_program(cls, program: Any, block: int) -> CustomerKeyPair:
        """Keys with exactly the evaluation keys a tariff program uses (and no others)."""
        return cls.generate(
            program.params,
            program.rotation_steps(block),
            relinearization=program.relinearization,
            automorphisms=program.automorphisms(),
        )

    def evaluation_keys_bytes(self) -> bytes:
        """Every evaluation key this receiver hands out, as one blob (msgpack map)."""
        return msgpack.packb(
            {"automorphism": self.rotation_keys_bytes(), "mult": self.relinearization_key_bytes()},
            use_bin_type=True,
        )

    def relinearization_key_bytes(self) -> bytes:
        """The serialized relinearization key, or b"" when none was generated."""
        if not self.relinearization:
            return b""
        data = ofhe.SerializeEvalMultKeyString(ofhe.BINARY, self.key_tag)
        assert isinstance(data, bytes)
        return data

    @property
    def key_tag(self) -> str:
        return str(self.public_key.GetKeyTag())

    def rotation_keys_bytes(self) -> bytes:
        """The serialized rotation and automorphism keys, or b"" when none were generated."""
        if not self.rotation_steps and not self.automorphisms:
            return b""
        data = ofhe.SerializeEvalAutomorphismKeyString(ofhe.BINARY, self.key_tag)
        assert isinstance(data, bytes)
        return data

    def decrypt(self, ct: Ciphertext, length: int) -> list[int]:
        """Decrypt to ``length`` slots as integers in ``[0, t)``."""
        pt = self.context.Decrypt(self.secret_key, ct)
        pt.SetLength(length)
        t = self.params.plaintext_modulus
        return [int(v) % t for v in pt.GetPackedValue()]


class Encryptor:
    """What a gateway holds: the context and a customer's public key."""

    def __init__(self, params: FheParameters, context: Any, public_key: Any) -> None:
        self.params = params
        self.context = context
        self.public_key = public_key

    @property
    def key_tag(self) -> str:
        return str(self.public_key.GetKeyTag())

    def encrypt(self, slots: Sequence[int]) -> bytes:
        if len(slots) > self.params.slots:
            raise ValueError(f"{len(slots)} values do not fit {self.params.slots} slots")
        half = self.params.plaintext_modulus // 2
        if any(not -half <= v <= half for v in slots):
            raise ValueError("every slot value must lie in [-t/2, t/2]")
        pt = self.context.MakePackedPlaintext(list(slots))
        return serialize(self.context.Encrypt(self.public_key, pt))
