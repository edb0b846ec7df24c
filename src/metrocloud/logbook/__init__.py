"""The logbook: the tamper-evident audit trail every service reports to.

:class:`MerkleLogbook` (an RFC 9162 transparency log) is the cloud's logbook;
:class:`HashChainLogbook` remains for the PKI's own log.
"""

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
from metrocloud.logbook.transparency import AUDIENCES, MerkleLogbook
from metrocloud.logbook.tree import MerkleTree, TreeError

__all__ = [
    "AUDIENCES",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "ZERO_HASH",
    "ChainVerdict",
    "HashChainLogbook",
    "LogEntry",
    "Logbook",
    "LogbookError",
    "MerkleLogbook",
    "MerkleTree",
    "TreeError",
    "chain_hash",
]
