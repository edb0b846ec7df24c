"""Wire messages: round trips of every type, and refusal of anything malformed."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.core.errors import Rejected
from metrocloud.core.messages import (
    BODY_TYPES,
    WIRE_VERSION,
    CertificateRequest,
    DisplayRequest,
    Envelope,
    KeyRegistration,
    LogRead,
    Message,
    PeriodClose,
    RevocationRequest,
    SoftwareReport,
    TariffResult,
    Transmission,
    VerificationReport,
)

NOW = "2026-01-31T23:45:00+00:00"

SAMPLES: list[Message] = [
    Transmission(
        gateway="gw-0001",
        meter="m-0001",
        customer="c-0001",
        period_start=210_529,
        period_end=213_505,
        seq=3,
        first_index=210_817,
        count=96,
        block=128,
        parameters_id="bfv-0123456789abcdef",
        key_tag="a" * 64,
        sent_at=NOW,
        c=[b"\x00\x01ciphertext" * 10, b"second"],
        c_dup=[b"\xff" * 33, b"second'"],
    ),
    PeriodClose(
        gateway="gw-0001",
        meter="m-0001",
        customer="c-0001",
        period_start=210_529,
        period_end=213_505,
        transmissions=31,
        block=128,
        sent_at=NOW,
    ),
    KeyRegistration(
        customer="c-0001",
        parameters={
            "scheme": "BFV",
            "plaintext_modulus": 1_099_511_922_689,
            "ring_dimension": 8192,
        },
        key_tag="b" * 64,
        context=b"ctx",
        public_key=b"pk",
        evaluation_keys=b"keys",
        digest="2" * 64,
        part=0,
        parts=1,
        sent_at=NOW,
    ),
    VerificationReport(
        customer="c-0001",
        meter="m-0001",
        period_id="210529-213505",
        verified=0,
        reason="index check failed: ü",
        sent_at=NOW,
    ),
    TariffResult(
        meter="m-0001",
        customer="c-0001",
        period_start=210_529,
        period_end=213_505,
        transmissions=31,
        tariff={"name": "taf1", "version": "1.0.0", "checksum": "0" * 64},
        tariff_config_digest="1" * 64,
        registers=1,
        block=128,
        parameters_id="bfv-0123456789abcdef",
        r=[b"r" * 100],
        r_dup=[b"r'" * 50],
        computed_at=NOW,
    ),
    DisplayRequest(customer="c-0001", meter="m-0001", period_id="210529-213505", sent_at=NOW),
    CertificateRequest(csr=b"\x30\x82csr", role="gateway", validity_days=365, sent_at=NOW),
    RevocationRequest(serial="5e1a1", reason="keyCompromise", sent_at=NOW),
    LogRead(target="GET /entries?audience=consumer&start=0", sent_at=NOW),
    SoftwareReport(
        component="legal",
        instance_id="0" * 32,
        name="metrocloud-legal",
        version="1.0.0",
        checksum="a" * 64,
        changed=["metrocloud.cloud.legal"],
        sent_at=NOW,
    ),
]


def test_samples_cover_every_body_type() -> None:
    assert {type(m) for m in SAMPLES} == set(BODY_TYPES.values())
    assert len(BODY_TYPES) == len(SAMPLES)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_round_trip(msg: Message) -> None:
    raw = msg.encode()
    again = type(msg).decode(raw)
    assert again == msg
    assert again.encode() == raw  # serialized once, identically
    env = Envelope(raw, b"cert", b"sig")
    decoded = Envelope.decode(env.encode())
    assert decoded == env
    assert decoded.body_kind() == msg.kind


def test_period_ids() -> None:
    tx, close = SAMPLES[:2]
    (result,) = [m for m in SAMPLES if isinstance(m, TariffResult)]
    assert isinstance(tx, Transmission) and isinstance(close, PeriodClose)
    assert isinstance(result, TariffResult)
    assert tx.period_id == close.period_id == result.period_id == "210529-213505"


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_decode_as_another_type_is_rejected(msg: Message) -> None:
    for other in BODY_TYPES.values():
        if other is type(msg):
            continue
        with pytest.raises(Rejected) as exc:
            other.decode(msg.encode())
        assert exc.value.reason == "malformed-message"


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_missing_field_is_rejected(msg: Message) -> None:
    for f in dataclasses.fields(msg):
        data = {"kind": msg.kind, **dataclasses.asdict(msg)}
        del data[f.name]
        with pytest.raises(Rejected) as exc:
            type(msg).decode(msgpack.packb(data, use_bin_type=True))
        assert exc.value.reason == "malformed-message"
        assert f.name in exc.value.detail


WRONG_VALUES: dict[str, list[Any]] = {
    "str": [1, b"bytes", None, ["a"], True],
    "int": ["1", 1.0, None, b"\x01", True, False],
    "bytes": ["text", 1, None, [1, 2]],
    "dict[str, Any]": [[], "x", 1, None],
    "list[bytes]": [b"bytes", "text", None, [b"ok", "not bytes"], [1]],
    "list[str]": ["text", b"bytes", None, ["ok", b"not text"], [1]],
}


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_wrong_field_types_are_rejected(msg: Message) -> None:
    for f in dataclasses.fields(msg):
        for wrong in WRONG_VALUES[str(f.type)]:
            data = {"kind": msg.kind, **dataclasses.asdict(msg), f.name: wrong}
            with pytest.raises(Rejected) as exc:
                type(msg).decode(msgpack.packb(data, use_bin_type=True))
            assert exc.value.reason == "malformed-message", (f.name, wrong)


def with_nul(value: Any) -> Any | None:
    """``value`` with a NUL character put into a text of it (None when it has no text)."""
    if isinstance(value, str):
        return value[:1] + "\x00" + value[1:]
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [with_nul(value[0]), *value[1:]]
    if isinstance(value, dict):
        return {**value, "note\x00": "x"}
    return None


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_a_nul_character_in_any_text_is_refused(msg: Message) -> None:
    """No id, name or time holds NUL, and PostgreSQL's text cannot store one: a message
    with one is refused as it is read, the same on either storage engine."""
    tried = 0
    for f in dataclasses.fields(msg):
        changed = with_nul(getattr(msg, f.name))
        if changed is None:
            continue
        tried += 1
        data = {"kind": msg.kind, **dataclasses.asdict(msg), f.name: changed}
        with pytest.raises(Rejected) as exc:
            type(msg).decode(msgpack.packb(data, use_bin_type=True))
        assert exc.value.reason == "malformed-message"
        assert f"{msg.kind}.{f.name} holds a NUL character" in exc.value.detail
    assert tried > 0
    assert type(msg).decode(msg.encode()) == msg  # bytes may hold NUL: c=[b"\x00..."]


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xc1", b"\x91", b"not msgpack at all \xff", msgpack.packb([1, 2]), b"\x92\x01"],
)
def test_message_decode_of_garbage(raw: bytes) -> None:
    with pytest.raises(Rejected) as exc:
        Transmission.decode(raw)
    assert exc.value.reason == "malformed-message"


def test_message_body_with_wrong_kind() -> None:
    data = {**dataclasses.asdict(SAMPLES[1]), "kind": "transmission"}
    with pytest.raises(Rejected) as exc:
        PeriodClose.decode(msgpack.packb(data))
    assert exc.value.reason == "malformed-message"


# -- Envelope ------------------------------------------------------------------------------------


def envelope_map(**changes: Any) -> bytes:
    data: dict[str, Any] = {"v": WIRE_VERSION, "body": b"body", "cert": b"cert", "sig": b"sig"}
    for k, v in changes.items():
        if v is _DELETE:
            del data[k]
        else:
            data[k] = v
    return msgpack.packb(data, use_bin_type=True)


_DELETE = object()


def test_envelope_round_trip_and_layout() -> None:
    env = Envelope(b"\x00body", b"\x30cert", b"\x30sig")
    raw = env.encode()
    assert msgpack.unpackb(raw) == {
        "v": 1,
        "body": b"\x00body",
        "cert": b"\x30cert",
        "sig": b"\x30sig",
    }
    assert Envelope.decode(raw) == env


def reason_of(raw: bytes) -> str:
    with pytest.raises(Rejected) as exc:
        Envelope.decode(raw)
    return exc.value.reason


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"\xc1",  # never used in msgpack
        b"\xa2\xff\xfe",  # str with invalid UTF-8
        b"\xd4\xff\x00",  # broken timestamp extension
        b"\x81\x90\x01",  # map with an array as key
        b"\xdd\xff\xff\xff\xff",  # array claiming 2**32 - 1 entries
        b"\x91" * 5000,  # deeply nested
        msgpack.packb({"v": 1}) + b"\x00",  # trailing data
    ],
    ids=repr,
)
def test_envelope_garbage_is_malformed(raw: bytes) -> None:
    assert reason_of(raw) == "malformed-message"


def test_envelope_truncated_is_malformed() -> None:
    raw = Envelope(b"body" * 50, b"cert" * 50, b"sig" * 20).encode()
    for cut in range(len(raw)):
        assert reason_of(raw[:cut]) == "malformed-message", cut


@pytest.mark.parametrize("raw", [msgpack.packb([1, 2, 3]), msgpack.packb("str"), msgpack.packb(1)])
def test_envelope_not_a_map(raw: bytes) -> None:
    assert reason_of(raw) == "malformed-message"


@pytest.mark.parametrize("version", [0, 2, -1, 99, "1", None, b"\x01"])
def test_envelope_wrong_version(version: Any) -> None:
    assert reason_of(envelope_map(v=version)) == "unsupported-version"


def test_envelope_without_version() -> None:
    assert reason_of(envelope_map(v=_DELETE)) == "unsupported-version"


@pytest.mark.parametrize("name", ["body", "cert", "sig"])
def test_envelope_missing_field(name: str) -> None:
    assert reason_of(envelope_map(**{name: _DELETE})) == "malformed-message"


@pytest.mark.parametrize("name", ["body", "cert", "sig"])
@pytest.mark.parametrize("wrong", ["text", 1, None, [b"x"], {"a": b"x"}])
def test_envelope_wrong_field_types(name: str, wrong: Any) -> None:
    assert reason_of(envelope_map(**{name: wrong})) == "malformed-message"


def test_body_kind_checks() -> None:
    for body in [b"\xc1", msgpack.packb([1]), msgpack.packb({"kind": 1}), msgpack.packb({})]:
        with pytest.raises(Rejected) as exc:
            Envelope(body, b"", b"").body_kind()
        assert exc.value.reason == "malformed-message"
    with pytest.raises(Rejected, match="unknown body kind"):
        Envelope(msgpack.packb({"kind": "nope"}), b"", b"").body_kind()


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_envelope_decode_of_arbitrary_bytes_raises_only_rejected(raw: bytes) -> None:
    try:
        env = Envelope.decode(raw)
    except Rejected as exc:
        assert exc.reason in {"malformed-message", "unsupported-version"}
        return
    assert isinstance(env.body, bytes)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from(["v", "body", "cert", "sig", "x"]) | st.text(max_size=4),
        msgpack_values,
        max_size=5,
    )
)
def test_envelope_decode_of_arbitrary_maps_raises_only_rejected(data: dict[str, Any]) -> None:
    raw = msgpack.packb(data, use_bin_type=True)
    try:
        Envelope.decode(raw)
    except Rejected as exc:
        assert exc.reason in {"malformed-message", "unsupported-version"}


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_message_decode_of_arbitrary_bytes_raises_only_rejected(raw: bytes) -> None:
    for cls in BODY_TYPES.values():
        try:
            cls.decode(raw)
        except Rejected as exc:
            assert exc.reason == "malformed-message"


VALID_ENVELOPE = Envelope(SAMPLES[1].encode(), b"\x30" * 40, b"\x30" * 70).encode()


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_ENVELOPE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, len(VALID_ENVELOPE)),
)
def test_envelope_decode_of_mutated_envelopes_raises_only_rejected(
    edits: list[tuple[int, int]], cut: int
) -> None:
    raw = bytearray(VALID_ENVELOPE)
    for pos, value in edits:
        raw[pos] = value
    try:
        env = Envelope.decode(bytes(raw[:cut]))
    except Rejected as exc:
        assert exc.reason in {"malformed-message", "unsupported-version"}
        return
    try:
        env.body_kind()
    except Rejected as exc:
        assert exc.reason == "malformed-message"
