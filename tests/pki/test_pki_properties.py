"""Property: signatures round-trip for any message and any single-bit flip is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.core.errors import Rejected
from metrocloud.pki import Identity, IdentityStore, Role, verify_signature


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    store = IdentityStore(tmp_path_factory.mktemp("pki"))
    return store.identity("gw-prop", Role.GATEWAY)


@given(message=st.binary(max_size=1024), data=st.data())
def test_sign_verify_and_single_bit_flips(
    identity: Identity, message: bytes, data: st.DataObject
) -> None:
    signature = identity.sign(message)
    verify_signature(identity.certificate, message, signature)
    if not message:
        return
    bit = data.draw(st.integers(min_value=0, max_value=len(message) * 8 - 1), label="bit")
    flipped = bytearray(message)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(Rejected) as info:
        verify_signature(identity.certificate, bytes(flipped), signature)
    assert info.value.reason == "bad-signature"
