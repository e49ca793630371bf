"""Fault drills whose point is not a process boundary, run in this process (the drill's own
``main``: fedcare's real ClientApp with the drill's mod, simulate()'s in-process engine).

A hospital that scales its update by 20 is stopped by update clipping, and without clipping
it measurably hurts the model (the attack has power). The drills of a hospital that hangs or
exits its process run end to end, on Ray's engine (tests/e2e/test_faults.py).
"""

import csv

import pytest

from simulations.drills.fault_injection import main as drill

pytestmark = pytest.mark.slow  # three 6-round federations of 10 hospitals

BREAST = ("task=breast-cancer", "hospitals=10", "num-server-rounds=6", "dp.mode=none",
          "learning-rate=1.0", "dp.update-clipping-norm=2.0", "seed=0")


def _final_accuracy(out, factor: str, clip: str) -> tuple[float, list[dict]]:
    status = drill(["--fault", "scale", "--factor", factor, "--hospital", "3", "--out", str(out),
                    "--set", *BREAST, f"clip-updates={clip}"])
    assert status == 0
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[-1]["client_avg_accuracy"]), rows


def test_update_clipping_stops_a_scaling_attacker_that_otherwise_hurts(tmp_path):
    honest, _ = _final_accuracy(tmp_path / "honest", "1", "true")
    defended, rows = _final_accuracy(tmp_path / "clipped", "20", "true")
    attacked, _ = _final_accuracy(tmp_path / "unclipped", "20", "false")

    # The attacker's update is rejected every round and never averaged in.
    assert all(r["rejected"] == "1" and r["participants"] == "9" for r in rows)
    assert abs(defended - honest) <= 0.02
    assert attacked < honest - 0.10, (honest, attacked)
