"""In simulation a node's hospital is proved with its roster key, never taken from a claim.

The real driver, screening and identity book talk to the real ClientApp (which signs every
reply's identity, ``client.identity_proof``) over the in-process grid. A hospital whose first
reply claims another hospital's name is refused and blamed on its own node; the honest owner
binds by its proof and takes part in every round.
"""

import csv
import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from client.app import build_client_app
from common.config import RunConfig
from common.identity_proof import prove_identity
from common.secagg.roster import build_roster, load_signing_key, make_signing_key
from common.wire.fields import WireFormatError
from common.wire.records import IDENTITY_PROOF, REPLY, pack_reply, unpack_reply
from common.wire.replies import DeclinedReply, HospitalIdentity, RoundRef
from common.wire.statistics import StatisticsSpec
from server.federation import run_federation
from server.identity import BOUND_BY_CLAIM, BOUND_BY_NAME, BOUND_BY_PROOF, IdentityBook
from simulations.drills.fault_injection import Fault, fault_mod
from simulations.engine.ephemeral_roster import key_path
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy, with_ephemeral_roster

NAMES = ["cleveland", "hungary", "switzerland", "va"]
NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
IMPOSTOR = 1  # hungary's node (101) claims to be cleveland (node 100's hospital)
ROUNDS = 3


def _run(tmp_path, name, *, secure=False, mods=()):
    config = RunConfig.from_run_config({"dp.mode": "none", "local-steps": 2,
                                        "num-server-rounds": ROUNDS, "secagg.enabled": secure})
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = with_ephemeral_roster(config, run_dir)  # every simulation has a roster now
    mods = [mod(run_dir) for mod in mods]
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"), mods=mods)
    weights = run_federation(InProcessGrid(app, NODES, config.to_run_config()), config, run_dir)
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return weights, rows, json.loads((run_dir / "identities.json").read_text())


def _claims_cleveland(proof, *, rounds=None):
    """A mod factory: node IMPOSTOR's replies claim cleveland (only in `rounds`, if given).

    `proof(run_dir, header, msg)` gives what the header's proof becomes (None: no proof).
    """

    def factory(run_dir):
        def mod(msg, context, call_next):
            reply = call_next(msg, context)
            if int(context.node_config["partition-id"]) != IMPOSTOR or reply.has_error():
                return reply
            header = dict(reply.content[REPLY])
            if rounds is not None and header["server-round"] not in rounds:
                return reply
            header.update(name="cleveland", index=0)
            header.pop(IDENTITY_PROOF, None)
            signed = proof(run_dir, header, msg)
            if signed is not None:
                header[IDENTITY_PROOF] = signed
            content = RecordDict(dict(reply.content))
            content[REPLY] = ConfigRecord(header)
            return Message(content=content, reply_to=msg)

        return mod

    return factory


def _own_proof_kept(run_dir, header, msg):
    """The impostor's own, valid proof: of hungary, not of the cleveland it claims."""
    return _signed_by("hungary", run_dir, header, msg, name="hungary")


def _signed_by(signer, run_dir, header, msg, *, name):
    key = load_signing_key(key_path(run_dir, signer).read_bytes())
    return prove_identity(key, run_id=header["run-id"], server_round=header["server-round"],
                          name=name, node_id=int(msg.metadata.dst_node_id))


ATTACKS = {
    "unsigned": lambda run_dir, header, msg: None,
    "its own proof of hungary": _own_proof_kept,
    "cleveland's name signed with its own key": lambda run_dir, header, msg: _signed_by(
        "hungary", run_dir, header, msg, name="cleveland"),
}


@pytest.fixture(scope="module")
def without_impostor(tmp_path_factory):
    """The run in which hungary's node sends nothing usable: the other three's mean."""
    tmp = tmp_path_factory.mktemp("identity")
    weights, _, _ = _run(tmp, "declines",
                         mods=[lambda _: fault_mod(Fault("decline", hospital=IMPOSTOR))])
    return weights


def _assert_close(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_impostor_at_first_contact_is_refused_and_the_owner_takes_part_every_round(
        tmp_path, without_impostor, attack):
    # Act: from its first reply on, hungary's node claims cleveland
    weights, rows, identities = _run(tmp_path, "impostor",
                                     mods=[_claims_cleveland(ATTACKS[attack])])

    # Assert: every round has the three honest hospitals, cleveland's update included (the
    # model is the honest three's mean); only the impostor's node is refused, every round
    assert [r["round"] for r in rows] == [str(r) for r in range(1, ROUNDS + 1)]
    assert [(r["participants"], r["rejected"]) for r in rows] == [("3", "1")] * ROUNDS
    _assert_close(weights, without_impostor)
    assert identities == {
        "100": {"hospital": "cleveland", "bound_by": BOUND_BY_PROOF},
        "102": {"hospital": "switzerland", "bound_by": BOUND_BY_PROOF},
        "103": {"hospital": "va", "bound_by": BOUND_BY_PROOF}}


def test_under_secure_aggregation_the_impostor_cannot_stop_the_run(tmp_path, without_impostor):
    # With 4 hospitals and t = 3 the two refused nodes of a first-reply binding left 2: the
    # run stopped in round 1. Proofs leave the impostor alone out, and t = 3 remain.
    weights, rows, identities = _run(tmp_path, "secure-impostor", secure=True,
                                     mods=[_claims_cleveland(_own_proof_kept)])

    assert [r["participants"] for r in rows] == ["3"] * ROUNDS
    assert [r["aborted"] for r in rows] == ["0"] * ROUNDS
    _assert_close(weights, without_impostor)
    assert identities["100"] == {"hospital": "cleveland", "bound_by": BOUND_BY_PROOF}
    assert "101" not in identities


def test_an_unproved_first_reply_is_refused_for_its_round_only(tmp_path):
    # Hungary's node sends its round-1 reply unsigned (claiming its own name): refused that
    # round, blamed on its node; from round 2 on it proves who it is and takes part.
    def unsigned_in_round_1(run_dir):
        def mod(msg, context, call_next):
            reply = call_next(msg, context)
            if (int(context.node_config["partition-id"]) == IMPOSTOR and not reply.has_error()
                    and reply.content[REPLY]["server-round"] == 1):
                header = dict(reply.content[REPLY])
                header.pop(IDENTITY_PROOF)
                content = RecordDict(dict(reply.content))
                content[REPLY] = ConfigRecord(header)
                return Message(content=content, reply_to=msg)
            return reply

        return mod

    _, rows, identities = _run(tmp_path, "late", mods=[unsigned_in_round_1])

    assert [r["participants"] for r in rows] == ["3", "4", "4"]
    assert [r["rejected"] for r in rows] == ["1", "0", "0"]
    assert identities["101"] == {"hospital": "hungary", "bound_by": BOUND_BY_PROOF}


# The identity book and the wire field, with real roster keys.

@pytest.fixture(scope="module")
def consortium():
    pairs = [make_signing_key() for _ in NAMES]
    roster = build_roster(NAMES, [p.public_key for p in pairs], c=0, min_threshold=3)
    keys = {name: load_signing_key(p.private_pem) for name, p in zip(NAMES, pairs, strict=True)}
    return roster, keys


def _claim(keys, name, *, signer=None, node, run_id="run1", server_round=1):
    proof = prove_identity(keys[signer or name], run_id=run_id, server_round=server_round,
                           name=name, node_id=node)
    return HospitalIdentity(name, NAMES.index(name), proof)


def test_a_proof_binds_only_its_own_node_run_and_round(consortium):
    roster, keys = consortium
    book = IdentityBook(hospitals=NAMES, roster=roster)
    answers = RoundRef("run1", 1)

    accepted, refused = book.resolve([
        (100, _claim(keys, "cleveland", node=100)),
        (101, _claim(keys, "cleveland", node=100)),  # cleveland's proof, replayed elsewhere
        (102, _claim(keys, "cleveland", signer="hungary", node=102)),
        (103, _claim(keys, "cleveland", node=103, server_round=2)),  # another round's
        (104, _claim(keys, "cleveland", node=104, run_id="run0")),  # another run's
        (105, HospitalIdentity("cleveland", 0)),  # no proof
    ], answers)

    assert accepted == {100: HospitalIdentity("cleveland", 0)}
    assert set(refused) == {101, 102, 103, 104, 105}
    assert all(f"node {node} claims 'cleveland'" in why for node, why in refused.items())
    assert "without an identity proof" in refused[105]
    assert book.describe() == {"100": {"hospital": "cleveland", "bound_by": BOUND_BY_PROOF}}

    # Bound: its later replies need no proof; another name from it is refused.
    accepted, refused = book.resolve([(100, HospitalIdentity("cleveland", 0)),
                                      (101, _claim(keys, "hungary", node=101,
                                                       server_round=2))], RoundRef("run1", 2))
    assert accepted == {100: HospitalIdentity("cleveland", 0),
                        101: HospitalIdentity("hungary", 1)}
    _, refused = book.resolve([(100, _claim(keys, "va", node=100, server_round=3))],
                              RoundRef("run1", 3))
    assert refused == {100: "node 100 is 'cleveland' but its reply claims 'va'"}


def test_registered_names_bind_without_proofs_and_no_roster_means_unproved(consortium):
    roster, _ = consortium
    named = IdentityBook(hospitals=NAMES, registered={7: "va"}, roster=roster)
    accepted, _ = named.resolve([(7, HospitalIdentity("va", 3))], RoundRef("run1", 1))
    assert accepted == {7: HospitalIdentity("va", 3)}
    assert named.describe()["7"]["bound_by"] == BOUND_BY_NAME

    unproved = IdentityBook(hospitals=NAMES)
    accepted, _ = unproved.resolve([(8, HospitalIdentity("va", 3))], RoundRef("run1", 1))
    assert accepted == {8: HospitalIdentity("va", 3)}
    assert unproved.describe()["8"]["bound_by"] == BOUND_BY_CLAIM


def _declined(proof):
    return pack_reply(DeclinedReply(HospitalIdentity("va", 3, proof), RoundRef("run1", 1), "no"))


def test_the_identity_proof_travels_typed_and_is_validated_on_unpacking(consortium):
    _, keys = consortium
    spec = StatisticsSpec("binary", 1)
    proof = _claim(keys, "va", node=9).proof

    assert unpack_reply(_declined(proof), statistics=spec).hospital.proof == proof
    assert unpack_reply(_declined(None), statistics=spec).hospital.proof is None
    for bad, problem in ((proof[:-1], "must be 64 bytes, got 63"), ("ab" * 64, "must be bytes")):
        content = _declined(None)
        content[REPLY] = ConfigRecord({**dict(content[REPLY]), IDENTITY_PROOF: bad})
        with pytest.raises(WireFormatError, match=f"reply.identity-proof: {problem}"):
            unpack_reply(content, statistics=spec)
