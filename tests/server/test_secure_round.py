"""Secure rounds through the real driver and ClientApp (in-process grid of real Messages).

The secure model equals the plain one; one misbehaving hospital (garbage share ciphertexts, a
malformed masked input, another's identity, lying unmask shares) cannot stop the round, and
the result equals the sum of the updates that should be in it.
"""


import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from client.app import build_client_app
from common.config import RunConfig
from common.secagg.protocol import Key, Stage
from server.federation import run_federation
from simulations.drills.fault_injection import Fault, fault_mod
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy, with_ephemeral_roster

NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
BAD = 1  # hungary


def _run(tmp_path, name, *, secure, mods=()):
    config = RunConfig.from_run_config({"dp.mode": "none", "local-steps": 2,
                                        "num-server-rounds": 3, "secagg.enabled": secure})
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = with_ephemeral_roster(config, run_dir)
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"), mods=list(mods))
    grid = InProcessGrid(app, NODES, config.to_run_config())
    return run_federation(grid, config, run_dir), grid, run_dir


def _stage_mod(stage, corrupt):
    """A mod: hospital BAD's reply to `stage` is passed through `corrupt(payload) -> payload`."""

    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        if int(context.node_config["partition-id"]) != BAD or reply.has_error():
            return reply
        content = reply.content
        if "secagg" not in content or content["secagg"].get(Key.STAGE) != stage:
            return reply
        bad = RecordDict(dict(content))
        bad["secagg"] = ConfigRecord(corrupt(dict(content["secagg"])))
        return Message(content=bad, reply_to=msg)

    return mod


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secure")
    plain, _, _ = _run(tmp, "plain", secure=False)
    without_bad, _, _ = _run(tmp, "declines", secure=False,
                             mods=[fault_mod(Fault("decline", hospital=BAD))])
    return plain, without_bad


def _assert_close(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_secure_model_equals_plain_model_in_four_exchanges_a_round(tmp_path, baselines):
    weights, grid, _ = _run(tmp_path, "secure", secure=True)
    _assert_close(weights, baselines[0])
    kinds = [m.metadata.message_type for m in grid.sent]
    # Round 1: advertise, share, mask, check, unmask; steady rounds: 4; then one evaluate.
    assert len(grid.sent) == 4 * (5 + 4 + 4 + 1) and kinds.count("evaluate") == 4


def _garbage_ciphertexts(payload):
    payload[Key.CIPHERTEXTS] = [b"\x00" * len(c) for c in payload[Key.CIPHERTEXTS]]
    return payload


def _short_masked_input(payload):
    payload[Key.MASKED_INPUT] = payload[Key.MASKED_INPUT][:-8]
    return payload


@pytest.mark.parametrize(("stage", "corrupt"), [
    (Stage.SHARE_KEYS, _garbage_ciphertexts),
    (Stage.MASKED_INPUT, _short_masked_input),
], ids=["garbage-ciphertexts", "malformed-input"])
def test_one_bad_hospital_is_left_out_and_the_sum_is_the_others(tmp_path, baselines, stage,
                                                                  corrupt):
    weights, _, run_dir = _run(tmp_path, "bad", secure=True, mods=[_stage_mod(stage, corrupt)])
    _assert_close(weights, baselines[1])  # the three others' mean, every round
    assert (run_dir / "report.md").is_file()


def test_another_hospitals_identity_in_a_stage_reply_is_refused(tmp_path, baselines):
    from common.wire.records import REPLY

    def claim_cleveland(msg, context, call_next):
        reply = call_next(msg, context)
        if (int(context.node_config["partition-id"]) == BAD and not reply.has_error()
                and msg.metadata.message_type == "train.secagg_mask"):
            content = RecordDict(dict(reply.content))
            content[REPLY] = ConfigRecord({**dict(content[REPLY]), "name": "cleveland",
                                           "index": 0})
            return Message(content=content, reply_to=msg)
        return reply

    weights, _, _ = _run(tmp_path, "impostor", secure=True, mods=[claim_cleveland])
    _assert_close(weights, baselines[1])


def test_lying_unmask_shares_cannot_stop_the_round(tmp_path, baselines):
    def lie(payload):
        payload[Key.SELF_SEED_SHARES] = [bytes(reversed(s)) for s in payload[Key.SELF_SEED_SHARES]]
        return payload

    weights, _, _ = _run(tmp_path, "liar", secure=True, mods=[_stage_mod(Stage.UNMASK, lie)])
    # The liar's masked input was valid and is in the signed survivor set: the sum is exact.
    _assert_close(weights, baselines[0])
