"""Standard meter telegrams: wireless M-Bus (EN 13757-4 frame format A), wired M-Bus
(EN 13757-2 long frames), the EN 13757-3 / OMS application layer with security mode 5, and
metrocloud's ECDSA-signed readings. See ``docs/telegrams.md``.

Decoders refuse bad input only with :class:`metrocloud.core.errors.Rejected` (reasons in
:mod:`~metrocloud.field.telegrams.errors`); encoders raise ``ValueError``.
"""

from metrocloud.field.telegrams.address import (
    DeviceType,
    MeterAddress,
    decode_manufacturer,
    manufacturer_code,
)
from metrocloud.field.telegrams.application import (
    CI_LONG,
    CI_SHORT,
    ApplicationData,
    ApplicationHeader,
)
from metrocloud.field.telegrams.crc import crc16_en13757
from metrocloud.field.telegrams.errors import REASONS
from metrocloud.field.telegrams.link import (
    SND_IR,
    SND_NR,
    Telegram,
    decode_wmbus,
    encode_wmbus,
)
from metrocloud.field.telegrams.records import Coding, Function, Quantity, Record
from metrocloud.field.telegrams.security import MODE_AES_CBC, MODE_NONE
from metrocloud.field.telegrams.wired import (
    RSP_UD,
    Ack,
    ShortFrame,
    WiredTelegram,
    decode_mbus,
    decode_mbus_frame,
    encode_mbus,
    encode_mbus_short,
)

__all__ = [
    "CI_LONG",
    "CI_SHORT",
    "MODE_AES_CBC",
    "MODE_NONE",
    "REASONS",
    "RSP_UD",
    "SND_IR",
    "SND_NR",
    "Ack",
    "ApplicationData",
    "ApplicationHeader",
    "Coding",
    "DeviceType",
    "Function",
    "MeterAddress",
    "Quantity",
    "Record",
    "ShortFrame",
    "Telegram",
    "WiredTelegram",
    "crc16_en13757",
    "decode_manufacturer",
    "decode_mbus",
    "decode_mbus_frame",
    "decode_wmbus",
    "encode_mbus",
    "encode_mbus_short",
    "encode_wmbus",
    "manufacturer_code",
]
