"""The hospital signs the identity every reply states, with its roster key (a Flower mod).

A simulated node has no name the server could trust, so the server binds a node to a hospital
only on a proof: the identity the reply claims, signed with that hospital's Ed25519 key from
the run's roster over the run, the round, the name and the node id the reply leaves from
(``common.identity_proof``, ``server.identity``). The hospital signs every reply: it keeps no
memory of whether the server has bound it yet (a restarted hospital would not know), and a
signature costs about 0.1 ms.

The handlers name the key: once the hospital's privacy settings are known (its roster key
path, ``HospitalPrivacy.signing_key_path``), ``remember_signing_key`` keeps the path (never
the key) and the hospital's name in the node's state, and ``identity_proof_mod``, innermost
around every handler, signs each reply that claims that name. A reply without a remembered key
(a hospital with no roster key, or a refusal before its settings were read) leaves unsigned;
in deployment the SuperLink's registered name identifies the node and no proof is needed.
"""

import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Context, Message

from common.identity_proof import prove_identity
from common.secagg.roster import load_signing_key
from common.wire.records import attach_identity_proof, reply_claim

logger = logging.getLogger(__name__)

STATE_KEY = "identity-key"  # the node's state record: the hospital's name and key path


def remember_signing_key(context: Context, name: str, path: Path | None) -> None:
    """Keep the path of hospital `name`'s roster signing key for signing its replies."""
    if path is None:
        return
    context.state[STATE_KEY] = ConfigRecord({"name": name, "path": str(path)})


def identity_proof_mod(msg: Message, context: Context,
                       call_next: Callable[[Message, Context], Message]) -> Message:
    """Sign the reply's identity (a Flower mod; innermost, so it signs what the handler built)."""
    reply = call_next(msg, context)
    if reply.has_error() or STATE_KEY not in context.state:
        return reply
    claim = reply_claim(reply.content)
    remembered = context.state[STATE_KEY]
    if claim is None or claim[0].name != remembered.get("name"):
        return reply  # only this hospital's own name is ever signed
    identity, answers = claim
    try:
        key = _signing_key(Path(str(remembered["path"])))
    except (OSError, ValueError) as error:
        logger.warning("reply left without an identity proof: signing key %s: %s",
                       remembered["path"], error)
        return reply
    attach_identity_proof(reply.content, prove_identity(
        key, run_id=answers.run_id, server_round=answers.server_round, name=identity.name,
        node_id=int(msg.metadata.dst_node_id)))
    return reply


@lru_cache(maxsize=8)
def _signing_key(path: Path) -> Ed25519PrivateKey:
    return load_signing_key(path.read_bytes(), source=str(path))
