"""Secure aggregation as pure state machines: the one import the Flower glue needs.

A round is five stages (advertise-keys, share-keys, masked-input, consistency-check, unmask),
each one server request per hospital and one reply. The server learns the sum of the signed
survivor set's quantised updates and nothing about any single update, even if it deviates, as
long as at most c hospitals collude with it. Bonawitz et al. (CCS 2017), Section 4 (Figure 4).
"""

# Message formats. Every request and reply also carries secagg-stage: str, secagg-round: int.
# Hospitals are roster names (str); lists of names are in roster order.
#
# stage              server -> hospital                      hospital -> server
# advertise-keys     run-id: str, roster-digest: bytes(32),  hospital: str, mask-public-key,
#                    settings-digest: bytes(32)              encryption-public-key,
#                                                            seed-commitment, settings-digest:
#                                                            bytes(32); key-signature: bytes(64)
# share-keys         threshold: int, hospitals: list[str]    receivers: list[str],
#                    (U1); mask-public-keys,                 ciphertexts: list[bytes] (160 each)
#                    encryption-public-keys,
#                    seed-commitments, settings-digests:
#                    list[bytes(32)]; key-signatures:
#                    list[bytes(64)]
# masked-input       hospitals: list[str] (U2), senders:     masked-input: bytes (d little-endian
#                    list[str], ciphertexts: list[bytes]     uint64 words), failed-senders:
#                    (addressed to this hospital),           list[str] (whose ciphertext failed
#                    vector-length: int                      to authenticate here)
# consistency-check  survivors (U3), dropped (U2 - U3):      survivor-signature: bytes(64)
#                    list[str]
# unmask             survivors, dropped: list[str];          self-seed-owners, mask-key-owners:
#                    signers: list[str], survivor-           list[str]; self-seed-shares,
#                    signatures: list[bytes(64)] (>= t)      mask-key-shares: list[bytes(66)]
#
# Between messages a hospital's client lives in Flower's in-memory Context.state as
# SecAggClient.to_record() (a ConfigRecord-compatible dict with the round's private keys, never
# the signing key); rebuild it with SecAggClient.from_record(record, roster=..., signing_key=...).

from common.secagg.client_protocol import SecAggClient
from common.secagg.client_state import ClientState
from common.secagg.messages import (
    MIN_PARTICIPANTS,
    STAGE_ORDER,
    Advertisement,
    Key,
    SecAggResult,
    Stage,
    threshold_problem,
    vector_from_bytes,
    vector_to_bytes,
)
from common.secagg.roster import (
    Roster,
    SigningKeyPair,
    build_roster,
    load_roster,
    load_signing_key,
    make_signing_key,
    roster_from_bytes,
)
from common.secagg.server_protocol import SecAggServer, parse_advertisement
from common.secagg.signatures import SecAggSettings, settings_digest

__all__ = [
    "Advertisement",
    "ClientState",
    "MIN_PARTICIPANTS",
    "Roster",
    "STAGE_ORDER",
    "Key",
    "SecAggClient",
    "SecAggResult",
    "SecAggServer",
    "SecAggSettings",
    "SigningKeyPair",
    "Stage",
    "build_roster",
    "load_roster",
    "load_signing_key",
    "make_signing_key",
    "parse_advertisement",
    "roster_from_bytes",
    "settings_digest",
    "threshold_problem",
    "vector_from_bytes",
    "vector_to_bytes",
]
