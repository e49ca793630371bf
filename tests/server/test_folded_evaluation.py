"""Round r's model evaluated by round r+1's train message: the same rows, one exchange a round.

The real driver and ClientApp over an in-process grid of real Flower Messages.
"""

import csv

import numpy as np
import pytest

from client.app import build_client_app
from common.config import RunConfig
from server.federation import run_federation
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy
from tests.crashing_grid import CrashingGrid

NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}


def _config(mode, **changes):
    return RunConfig.from_run_config({"dp.mode": mode, "local-steps": 2,
                                      "num-server-rounds": 4, **changes})


def _run(run_dir, config, grid_class=InProcessGrid, **grid_args):
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
    grid = grid_class(app, NODES, config.to_run_config(), **grid_args)
    weights = run_federation(grid, config, run_dir)
    return weights, grid


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(handle)]


@pytest.mark.parametrize("mode", ["none", "patient"])
def test_folded_rows_equal_unfolded_rows_in_every_column_but_seconds(tmp_path, mode):
    folded_dir, unfolded_dir = tmp_path / "folded", tmp_path / "unfolded"
    folded_dir.mkdir(), unfolded_dir.mkdir()
    folded, folded_grid = _run(folded_dir, _config(mode))
    unfolded, unfolded_grid = _run(unfolded_dir, _config(mode, **{"fold-evaluation": False}))
    assert _rows(folded_dir) == _rows(unfolded_dir)
    for a, b in zip(folded, unfolded, strict=True):
        np.testing.assert_array_equal(a, b)
    # One exchange per steady round (4 hospitals a message), plus the last round's evaluation;
    # unfolded, an evaluate exchange after every round, but under DP only the final model is
    # evaluated (one release per hospital), so both make the same exchanges. Under DP the
    # consortium explanation adds one exchange after the last round.
    explanation = 0 if mode == "none" else 1
    assert len(folded_grid.sent) == 4 * (4 + 1 + explanation)
    assert len(unfolded_grid.sent) == 4 * (4 * 2 if mode == "none" else 4 + 1 + explanation)


@pytest.mark.parametrize("mode", ["none", "patient"])
def test_kill_and_resume_across_a_deferred_evaluation(tmp_path, mode):
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole_dir.mkdir(), killed_dir.mkdir()
    whole, _ = _run(whole_dir, _config(mode))
    with pytest.raises(KeyboardInterrupt):
        _run(killed_dir, _config(mode), CrashingGrid, crash_round=3)
    # Round 2's row was still waiting for its evaluation: kept, without its evaluation columns.
    killed_rows = _rows(killed_dir)
    assert [r["round"] for r in killed_rows] == ["1", "2"] and killed_rows[1]["pooled_loss"] == ""
    resumed, _ = _run(killed_dir, _config(mode, resume=True))
    assert _rows(killed_dir) == _rows(whole_dir)
    for a, b in zip(resumed, whole, strict=True):
        np.testing.assert_array_equal(a, b)
