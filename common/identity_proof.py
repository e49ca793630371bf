"""A hospital's proof that a reply is its own: an Ed25519 signature with its roster key.

Flower's server-side grid knows a node only by its node id. In deployment the SuperLink also
holds the name each node's key was registered under, so the server binds a node to that name;
a simulated node has no name, so a claim in its reply would be all there is. Instead, each
simulated hospital signs the identity its replies state with its Ed25519 key from the run's
roster, over the run id, the round, its name and the node id the reply leaves from: a proof
holds for one node, one run and one round, and only the holder of that hospital's roster key
can make it. The server binds a node to a hospital only on a proof that verifies under the
roster key of the name claimed (``server.identity``).

The signed bytes are length-prefixed and domain-separated, so they can be neither confused
with secure aggregation's signatures (``common.secagg.signatures``) nor re-cut into another
(run, round, name, node) tuple.
"""

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.secagg.signatures import SIGNATURE_BYTES, sign, verify

PROOF_BYTES = SIGNATURE_BYTES
_LABEL = b"fedcare/identity-proof/v1"
_NODE_ID_BYTES = 8  # Flower's node ids are unsigned 64-bit integers


def identity_message(*, run_id: str, server_round: int, name: str, node_id: int) -> bytes:
    """The bytes a hospital signs: label, run id, round, name and node id, each length-prefixed.

    Raises
    ------
    ValueError
        If the round or node id is negative or the node id does not fit 64 bits.
    """
    if server_round < 0 or not 0 <= node_id < 2 ** (8 * _NODE_ID_BYTES):
        raise ValueError(f"round {server_round} and node id {node_id} must be unsigned "
                         f"(the node id within {8 * _NODE_ID_BYTES} bits)")
    parts = (_LABEL, run_id.encode("utf-8"), server_round.to_bytes(8, "big"),
             name.encode("utf-8"), node_id.to_bytes(_NODE_ID_BYTES, "big"))
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def prove_identity(signing_key: Ed25519PrivateKey, *, run_id: str, server_round: int,
                   name: str, node_id: int) -> bytes:
    """The proof (64 bytes) that hospital `name` sends this reply from node `node_id`."""
    return sign(signing_key, identity_message(run_id=run_id, server_round=server_round,
                                              name=name, node_id=node_id))


def identity_proven(public_key: Ed25519PublicKey, proof: bytes, *, run_id: str,
                    server_round: int, name: str, node_id: int) -> bool:
    """Whether `proof` is `name`'s signature, under its roster key, for this node, run, round."""
    try:
        message = identity_message(run_id=run_id, server_round=server_round, name=name,
                                   node_id=node_id)
    except ValueError:
        return False
    return verify(public_key, proof, message)
