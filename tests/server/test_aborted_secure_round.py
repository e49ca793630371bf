"""A hospital's secure input beyond its bound: the round aborts, the run goes on, bounded.

Secure rounds through the real driver and ClientApp over the in-process grid. The attacker is
hospital BAD itself: it replaces its own encoded input (its plaintext, before masking) with a
crafted one and then follows the protocol honestly, so the server sees only a valid masked
input. An undecodable sum, or one beyond the norm bound n x K, aborts the round: nothing is
averaged in, nobody is blamed, the charges stand, and the next round runs. An input within the
bound moves the model by no more than ``server.influence`` (docs/reliability-influence.md)
states.
"""

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import ConfigRecord

from client.app import build_client_app
from client.secure_aggregation import STATE_INPUT
from common.config import RunConfig
from common.secagg.protocol import Key, vector_to_bytes
from common.secagg.round_settings import encoding_range, encoding_scale
from common.wire.records import unpack_request
from server.federation import round_settings, run_federation
from server.influence import influence_bounds
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy, with_ephemeral_roster

NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
BAD = 1  # hungary
ROUNDS = 3
SLACK = 1e-5  # float32 weights


def _config(**extra):
    return RunConfig.from_run_config({"dp.mode": "none", "local-steps": 2,
                                      "num-server-rounds": ROUNDS, "secagg.enabled": True,
                                      **extra})


def _run(tmp_path, name, *, mods=(), config=None):
    config = config or _config()
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = with_ephemeral_roster(config, run_dir)
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"), mods=list(mods))
    grid = InProcessGrid(app, NODES, config.to_run_config())
    final = run_federation(grid, config, run_dir)
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    models = {}  # model after round r = the weights round r + 1 sent (the last: the final)
    for message in grid.sent:
        if message.metadata.message_type == "train.secagg_advertise":
            request = unpack_request(message.content)
            models.setdefault(request.settings.server_round - 1, request.weights)
    models[ROUNDS] = final
    return models, rows, run_dir


def _input_attack(crafted, rounds):
    """A mod: hospital BAD's encoded input in `rounds` becomes `crafted(d)` (uint64).

    It replaces it before masking it; everything else it does is honest.
    """

    def mod(msg, context, call_next):
        if (int(context.node_config["partition-id"]) == BAD
                and msg.metadata.message_type == "train.secagg_mask"
                and int(msg.content["secagg"][Key.ROUND]) in rounds):
            d = int(context.state[STATE_INPUT]["length"])
            context.state[STATE_INPUT] = ConfigRecord({"vector": vector_to_bytes(crafted(d)),
                                                       "length": d})
        return call_next(msg, context)

    return mod


def _grid_step(d):
    """The encoding's largest honest value as an integer, and its scale."""
    settings = round_settings(_config(), "run", 1)
    scale = encoding_scale(settings, d)
    return math.ceil(encoding_range(settings, d) * scale), scale


def _signed(values):
    return np.asarray(values, dtype=np.int64).view(np.uint64)


def undecodable(d):
    """Every coordinate at int64's edge: the sum cannot be a sum of n in-range inputs."""
    return _signed(np.full(d, 2**63 - 1))


def beyond_the_norm(d):
    """3 x range in every coordinate, beyond n x K in norm.

    The sum decodes coordinate by coordinate (|S_j| < n x range), but its L2 norm is about
    3 range sqrt(d).
    """
    limit, _ = _grid_step(d)
    return _signed(np.full(d, 3 * limit))


def within_the_norm(d):
    """An input of L2 norm 0.75 n K (K = C = 5 here), one direction: the sum passes both checks."""
    _, scale = _grid_step(d)
    return _signed(np.round(np.full(d, 0.75 * 4 * 5.0 / math.sqrt(d)) * scale))


def _norm(a, b):
    return float(np.sqrt(sum(np.sum((x.astype(np.float64) - y) ** 2) for x, y in zip(a, b,
                                                                                    strict=True))))


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("aborted"), "honest")


@pytest.fixture(scope="module")
def bounds(honest):
    models, _, _ = honest
    d = sum(int(w.size) for w in models[ROUNDS])
    return influence_bounds(_config(), d), influence_bounds(
        replace(_config(), clip_updates=True), d)


@pytest.mark.parametrize(("crafted", "reason"), [
    (undecodable, "the masks were not removed"),
    (beyond_the_norm, "L2 norm"),
], ids=["undecodable", "beyond-the-norm"])
def test_an_aborted_round_changes_nothing_blames_nobody_and_the_next_round_runs(
        tmp_path, honest, bounds, crafted, reason):
    # Act: BAD's input in round 2 is beyond what the sum may hold
    models, rows, run_dir = _run(tmp_path, "attacked", mods=[_input_attack(crafted, {2})])

    # Assert: all rounds ran; round 2 aborted, nobody rejected for it; round 3 had everyone
    assert [r["round"] for r in rows] == ["1", "2", "3"]
    assert [(r["participants"], r["aborted"], r["rejected"]) for r in rows] == [
        ("4", "0", "0"), ("0", "1", "0"), ("4", "0", "0")]
    for before, after in zip(models[1], models[2], strict=True):
        np.testing.assert_array_equal(before, after)  # nothing of round 2 averaged in
    # The attacker's influence: round 1 is the honest run's; round 2 moved nothing, where the
    # honest run moved by its step, at most K; within the stated 2K a round.
    secure, _ = bounds
    shift = _norm(models[2], honest[0][2])
    assert shift <= secure.secure_step + SLACK <= secure.secure_round + SLACK
    report = (run_dir / "report.md").read_text()
    assert "aborted these rounds" in report and "- round 2: " in report and reason in report


def test_an_input_within_the_norm_bound_moves_the_model_at_most_the_stated_bound(
        tmp_path, honest, bounds):
    # Act: BAD's input in round 1 is the largest in one direction the checks let through
    models, rows, _ = _run(tmp_path, "inside", mods=[_input_attack(within_the_norm, {1})])

    # Assert: the round counted; the model after it differs from the honest run's by at most
    # the stated 2K, and by more than the plain path's 2U/n for the same clip (the docs' point:
    # without input validation, secure aggregation gives one hospital n times the influence)
    secure, plain = bounds
    assert [(r["participants"], r["aborted"]) for r in rows] == [("4", "0")] * ROUNDS
    shift = _norm(models[1], honest[0][1])
    assert plain.plain_round < shift <= secure.secure_round + SLACK
    # Every step, whoever sent what, is at most K; over the run at most R x 2K from honest.
    steps = [_norm(models[r], models[r - 1]) for r in range(2, ROUNDS + 1)]
    assert max(steps) <= secure.secure_step + SLACK
    assert _norm(models[ROUNDS], honest[0][ROUNDS]) <= secure.over_run(secure.secure_round)


def test_the_charges_for_an_aborted_round_stand(tmp_path):
    # Patient-level DP: every hospital charged its ledger before it sent its masked input.
    config = _config(**{"dp.mode": "patient", "dp.epsilon": 8.0})
    _, rows, run_dir = _run(tmp_path, "charged", config=config,
                            mods=[_input_attack(undecodable, {2})])

    assert [(r["participants"], r["aborted"]) for r in rows] == [
        ("4", "0"), ("0", "1"), ("4", "0")]
    run_id = json.loads((run_dir / "config.json").read_text())["run_id"]
    for ledger in sorted((run_dir / "ledgers").glob("*.json")):
        entries = json.loads(ledger.read_text())["entries"]
        # Updates: not the evaluations (test track) nor the consortium explanation (training
        # track, charged under round 4, the one after the last).
        assert sorted(e["round"] for e in entries if e["run"] == run_id
                      and "track" not in e and e["round"] <= 3) == [1, 2, 3], ledger
        assert [e["noise_multiplier"] > 0 for e in entries if e["round"] == 4] == [True]
