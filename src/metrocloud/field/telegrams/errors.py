"""The stable rejection reasons of the telegram decoders.

Every decoder in this package refuses bad input with
:class:`metrocloud.core.errors.Rejected` and one of the ``reason`` codes below; nothing else
escapes a decoder. Encoders, which only ever see this project's own data, raise
``ValueError`` for input they cannot encode.
"""

from __future__ import annotations

from typing import Final, NoReturn

from metrocloud.core.errors import Rejected

#: The frame (or a record in it) ends before the length it declares.
TRUNCATED: Final = "truncated"
#: A length field disagrees with the frame, or is too small to hold the fixed fields.
BAD_LENGTH: Final = "bad-length"
#: A wireless M-Bus block CRC does not match (the detail names the first bad block).
BAD_CRC: Final = "bad-crc"
#: A wired M-Bus long frame's checksum does not match.
BAD_CHECKSUM: Final = "bad-checksum"
#: Start/stop characters, partial encryption or record layout break the frame format.
MALFORMED: Final = "malformed-telegram"
#: The M-field does not hold three letters A-Z.
BAD_MANUFACTURER: Final = "bad-manufacturer"
#: The CI field names an application layer this decoder does not implement.
UNKNOWN_CI: Final = "unknown-ci"
#: The configuration word names a security mode other than 0 (none) and 5 (AES-128-CBC).
UNSUPPORTED_SECURITY: Final = "unsupported-security-mode"
#: The telegram is encrypted and no key is known for the meter.
NO_KEY: Final = "no-key"
#: The key for the meter is not 16 bytes long.
BAD_KEY: Final = "bad-key"
#: The decrypted payload does not begin with 0x2F 0x2F: wrong key or tampered ciphertext.
DECRYPTION_CHECK_FAILED: Final = "decryption-check-failed"
#: A DIF (data information field) with a reserved code.
UNKNOWN_DIF: Final = "unknown-dif"
#: A VIF or VIFE (value information) with a reserved or unsupported code.
UNKNOWN_VIF: Final = "unknown-vif"
#: The DIF's data field does not fit the VIF (a date coded as BCD, ...).
BAD_CODING: Final = "bad-coding"
#: The data of a record is not a valid value of its coding (BCD digit > 9, 31 February, ...).
BAD_VALUE: Final = "bad-value"
#: More than ten DIFEs or VIFEs in one record.
BAD_RECORD: Final = "bad-record"
#: The metrocloud ECDSA block is malformed or its signature does not verify.
BAD_SIGNATURE: Final = "bad-signature"
#: A verification key is configured for the meter but the telegram carries no signature.
MISSING_SIGNATURE: Final = "missing-signature"
#: A wired M-Bus frame of another kind (ACK, short frame) where a long frame was expected.
UNEXPECTED_FRAME: Final = "unexpected-frame"

#: Every reason a decoder of this package may give.
REASONS: Final = frozenset(
    {
        TRUNCATED,
        BAD_LENGTH,
        BAD_CRC,
        BAD_CHECKSUM,
        MALFORMED,
        BAD_MANUFACTURER,
        UNKNOWN_CI,
        UNSUPPORTED_SECURITY,
        NO_KEY,
        BAD_KEY,
        DECRYPTION_CHECK_FAILED,
        UNKNOWN_DIF,
        UNKNOWN_VIF,
        BAD_CODING,
        BAD_VALUE,
        BAD_RECORD,
        BAD_SIGNATURE,
        MISSING_SIGNATURE,
        UNEXPECTED_FRAME,
    }
)


def reject(reason: str, detail: str) -> NoReturn:
    """Raise :class:`Rejected` with ``reason`` (one of :data:`REASONS`) and ``detail``."""
    raise Rejected(reason, detail)
