"""End to end: `fedcare simulate` writes a complete run directory, reproducibly on either engine,
and cleans up.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import REFERENCE_RUN, wait_until_gone  # noqa: E402

pytestmark = pytest.mark.slow

LOAD_WEIGHTS = (
    "import sys, numpy as np, keras; m = keras.saving.load_model(sys.argv[1]); "
    "assert not any(k in sys.modules for k in ('server', 'client', 'common', 'simulations')); "
    "np.savez(sys.argv[2], *m.get_weights())"
)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _opacus_epsilon(ledger_path: Path) -> float:
    """Patient-level epsilon of a ledger's training track, from Opacus's RDPAccountant stepped
    entry by entry (the test track's evaluation releases compose in parallel with it).
    """
    from opacus.accountants import RDPAccountant

    data = json.loads(ledger_path.read_text())
    accountant = RDPAccountant()
    for entry in data["entries"]:
        assert entry["level"] == "patient"
        if entry.get("track", "training") != "training":
            continue
        for _ in range(entry["steps"]):
            accountant.step(noise_multiplier=entry["noise_multiplier"],
                            sample_rate=entry["sample_rate"])
    return accountant.get_epsilon(delta=data["budget"]["delta"])


def _plain_keras_weights(model_path: Path, out: Path) -> list:
    """Load model.keras in a fresh interpreter with no fedcare on the path."""
    import numpy as np

    env = {**os.environ, "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", LOAD_WEIGHTS, str(model_path), str(out)],
                   check=True, cwd="/", env=env, capture_output=True)
    with np.load(out) as arrays:
        return [arrays[key] for key in sorted(arrays.files, key=lambda k: int(k.split("_")[1]))]


def test_the_seed_reproduces_the_run_on_rays_engine_which_leaves_no_process(
        fedcare_cli, tmp_path, reference_run):
    # The reference ran in the command's process (the default for 4 hospitals); the same seed
    # on Ray's engine must give the same model bit for bit (docs/simulation.md#reproducibility).
    ray = tmp_path / "ray"
    proc, marker = fedcare_cli(*REFERENCE_RUN, "--out", str(ray), "--engine", "ray")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wait_until_gone(marker, seconds=1.0) == []  # nothing the command started outlives it

    first = _plain_keras_weights(reference_run / "model.keras", tmp_path / "a.npz")
    second = _plain_keras_weights(ray / "model.keras", tmp_path / "b.npz")
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()
    same = [k for k in _rows(ray)[0] if k != "seconds"]
    assert [[r[k] for k in same] for r in _rows(ray)] == [
        [r[k] for k in same] for r in _rows(reference_run)]


def test_the_run_directory_is_complete_and_every_epsilon_equals_opacus(reference_run):
    rows = _rows(reference_run)
    assert [r["round"] for r in rows] == ["1", "2", "3", "4"]
    # Under DP only the final model is evaluated (a noised release): its metrics are estimates.
    assert all(0.0 <= float(rows[-1][k]) <= 1.0 for k in ("client_avg_accuracy", "client_avg_auc"))
    assert list(rows[0])[:4] == ["round", "seconds", "participants", "pooled_loss"]
    assert {"client_avg_accuracy", "client_avg_auc", "cleveland_accuracy", "va_auc"} <= set(rows[0])
    for name in ("config.json", "report.md", "metrics_vs_round.png", "hospital_metrics.png",
                 "epsilon_vs_round.png"):
        assert (reference_run / name).is_file()

    # The default run is patient-level DP: every epsilon printed equals Opacus on the ledgers.
    assert [r["declined"] for r in rows] == ["0"] * 4
    spent = [_opacus_epsilon(path) for path in sorted((reference_run / "ledgers").glob("*.json"))]
    assert len(spent) == 4 and all(0 < eps <= 1.0 for eps in spent)
    assert float(rows[-1]["epsilon_patient_max"]) == pytest.approx(max(spent), rel=1e-5)
    report = (reference_run / "report.md").read_text()
    assert "Privacy statement" in report and "Unit of privacy: one patient's record" in report
