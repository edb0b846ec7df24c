"""The logbook: the tamper-evident audit trail every service reports to."""

from metrocloud.logbook.chain import (
    HASH_SIZE,
    LEAF_PREFIX,
    ZERO_HASH,
    ChainVerdict,
    HashChainLogbook,
    Logbook,
    LogbookError,
    LogEntry,
    chain_hash,
)

__all__ = [
    "HASH_SIZE",
    "LEAF_PREFIX",
    "ZERO_HASH",
    "ChainVerdict",
    "HashChainLogbook",
    "LogEntry",
    "Logbook",
    "LogbookError",
    "chain_hash",
]
