"""A simulated run (real driver and ClientApp over the in-process grid) and the hospitals' logs.

Each hospital's disclosure log holds one record per request its node received, the chain and
its anchor verify, and no value of the model (the weights sent, the updates returned) or of
the hospital's data appears in it.
"""

from collections import Counter

import numpy as np
import pytest

from client.app import build_client_app
from common.config import RunConfig
from common.dp.disclosure_log import log_path, verify_beside
from common.dp.ledger import PrivacyLedger
from common.tasks.heart_disease import load_frame, load_hospitals
from server.federation import run_federation
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy

HOSPITALS = ("cleveland", "hungary", "switzerland", "va")
NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
# Where a number may stand in a record: counts, sizes, ids, rounds, budgets and epsilons.
NUMERIC_KEYS = {"seq", "round", "bytes", "shape", "run_id", "node_id", "server_node_id",
                "write", "entries", "steps", "epsilon", "delta", "test_epsilon", "test_delta",
                "noise_multiplier", "sample_rate", "train", "test", "hospital"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-round patient-level run of 4 hospitals; the replies' arrays are kept."""
    run_dir = tmp_path_factory.mktemp("run")
    config = RunConfig.from_run_config({"dp.mode": "patient", "dp.epsilon": 4.0,
                                        "local-steps": 2, "num-server-rounds": 2})
    replies = []

    def keep_replies(msg, context, call_next):
        reply = call_next(msg, context)
        replies.append(reply)
        return reply

    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"),
                           mods=[keep_replies])
    grid = InProcessGrid(app, NODES, config.to_run_config())
    run_federation(grid, config, run_dir)
    return run_dir, grid, replies


def _ledger(run_dir, name):
    return PrivacyLedger.read(run_dir / "ledgers" / f"{name}.json")


def test_one_record_per_request_and_the_chain_verifies(run):
    run_dir, grid, _ = run
    received = Counter(m.metadata.dst_node_id for m in grid.sent)

    for node, name in zip(NODES, HOSPITALS, strict=True):
        verification = verify_beside(_ledger(run_dir, name))
        assert verification.ok, verification.problems
        requests = [r for r in verification.records if r["event"] == "request"]
        assert len(requests) == received[node]
        assert {r["flower"]["message_id"] for r in requests} == {
            m.metadata.message_id for m in grid.sent if m.metadata.dst_node_id == node}
        assert verification.unanchored == 0


def test_every_charged_entry_is_recorded_once_as_charged_by_its_request(run):
    run_dir, _, _ = run
    for name in HOSPITALS:
        ledger = _ledger(run_dir, name)
        records = verify_beside(ledger).records
        charged = [(r["run"], r["round"], r["level"], r["track"]) for record in records
                   for r in record.get("releases", []) if r["charged"] == "this request"]
        assert sorted(charged) == sorted(e.key for e in ledger.entries)
        assert not any("unlogged_charges" in record for record in records)


def _numbers(value, key=None):
    """Every number in a record with the key it stands under (list items: the list's key)."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item, key)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield key, value


def _fine(values):
    """The values with more than 3 decimals (which no count, size or setting coincides with)."""
    return {float(v) for v in values if round(float(v), 3) != float(v)}


def test_no_model_or_data_value_is_in_any_log(run):
    run_dir, grid, replies = run
    model = _fine(v for m in [*grid.sent, *replies] if not m.has_error()
                  for record in m.content.array_records.values()
                  for array in record.values() for v in np.asarray(array.numpy()).ravel())
    features = _fine(v for data in load_hospitals(4)
                     for v in np.concatenate([data.x_train.ravel(), data.x_test.ravel()]))
    rows = {",".join(f"{v:g}" for v in row) for name in HOSPITALS
            for row in load_frame(name).to_numpy()}
    assert len(model) > 100 and len(features) > 100 and len(rows) > 100  # real values seen
    for name in HOSPITALS:
        text = log_path(run_dir / "ledgers" / f"{name}.json").read_text()
        numbers = [pair for record in verify_beside(_ledger(run_dir, name)).records
                   for pair in _numbers(record)]
        assert {key for key, _ in numbers} <= NUMERIC_KEYS
        logged = {float(v) for _, v in numbers}
        assert not logged & model  # no weight or update value
        assert not logged & features  # no (preprocessed) patient value
        assert not any(row in text for row in rows)  # no patient's record
