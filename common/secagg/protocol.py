"""Secure aggregation as pure state machines: the one import the Flower glue needs.

A round is four stages (advertise-keys, share-keys, masked-input, unmask), each one server
request per node and one reply; the glue only moves these dicts in ConfigRecords. The server
learns the sum of the survivors' quantised updates and nothing about any single update, as long
as fewer than t hospitals collude with it. Bonawitz et al. (CCS 2017), Section 4 (Figure 4).
"""

# Message formats (every request and reply also carries secagg-stage: str, secagg-round: int):
#
# stage           server -> node                           node -> server
# advertise-keys  (nothing else)                           mask-public-key, encryption-public-key:
#                                                          bytes(32)
# share-keys      threshold: int, node-ids: list[int]      receiver-ids: list[int],
#                 (sorted), mask-public-keys,              ciphertexts: list[bytes] (160 each)
#                 encryption-public-keys: list[bytes]
# masked-input    node-ids: list[int] (who shared keys),   masked-input: bytes (d little-endian
#                 sender-ids: list[int], ciphertexts:      uint64 words)
#                 list[bytes] (addressed to this node),
#                 vector-length: int
# unmask          survivor-ids, dropped-ids: list[int]     self-seed-owner-ids, mask-key-owner-ids:
#                                                          list[int]; self-seed-shares,
#                                                          mask-key-shares: list[bytes] (66 each)
#
# Between messages a hospital's client may live in Flower's in-memory Context.state as
# SecAggClient.to_record() (a ConfigRecord-compatible dict that holds its private keys).

from common.secagg.client_protocol import SecAggClient
from common.secagg.client_state import ClientState
from common.secagg.messages import (
    MIN_PARTICIPANTS,
    STAGE_ORDER,
    Key,
    PublicKeys,
    Stage,
    threshold_problem,
    vector_from_bytes,
    vector_to_bytes,
)
from common.secagg.server_protocol import SecAggResult, SecAggServer

__all__ = [
    "ClientState",
    "MIN_PARTICIPANTS",
    "STAGE_ORDER",
    "Key",
    "PublicKeys",
    "SecAggClient",
    "SecAggResult",
    "SecAggServer",
    "Stage",
    "threshold_problem",
    "vector_from_bytes",
    "vector_to_bytes",
]
