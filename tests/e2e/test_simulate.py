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
from processes import wait_until_gone  # noqa: E402

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


def test_simulate_two_rounds_reproducible_on_either_engine_and_leaves_no_process(
        fedcare_cli, tmp_path):
    # The same seed on Ray's engine and (the default for 4 hospitals) in this process: the
    # docs promise bit-identical models (docs/simulation.md#reproducibility).
    runs = []
    for name, engine in (("a", "ray"), ("b", "auto")):
        out = tmp_path / name
        proc, marker = fedcare_cli("simulate", "--rounds", "2", "--seed", "3", "--out", str(out),
                                   "--eval-every", "1", "--engine", engine)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # Nothing the command started may outlive it.
        assert wait_until_gone(marker, seconds=1.0) == []
        runs.append(out)

    for out in runs:
        rows = _rows(out)
        assert [r["round"] for r in rows] == ["1", "2"]
        # Under DP each round's evaluation is a noised release (--eval-every 1): the pooled loss
        # is not released, the metrics are estimates (that a run learns: test_in_process_engine).
        for row in rows:
            assert all(0.0 <= float(row[k]) <= 1.0 for k in ("client_avg_accuracy",
                                                             "client_avg_auc"))
        assert list(rows[0])[:4] == ["round", "seconds", "participants", "pooled_loss"]
        columns = {"client_avg_accuracy", "client_avg_auc", "cleveland_accuracy", "va_auc"}
        assert columns <= set(rows[0])
        for name in ("config.json", "report.md", "metrics_vs_round.png", "hospital_metrics.png"):
            assert (out / name).is_file()

    # The default run is patient-level DP: every epsilon printed equals Opacus on the ledgers.
    rows = _rows(runs[0])
    assert [r["declined"] for r in rows] == ["0", "0"]
    spent = [_opacus_epsilon(path) for path in sorted((runs[0] / "ledgers").glob("*.json"))]
    assert len(spent) == 4 and all(0 < eps <= 1.0 for eps in spent)
    assert float(rows[-1]["epsilon_patient_max"]) == pytest.approx(max(spent), rel=1e-5)
    report = (runs[0] / "report.md").read_text()
    assert "Privacy statement" in report and "Unit of privacy: one patient's record" in report
    assert (runs[0] / "epsilon_vs_round.png").is_file()

    first = _plain_keras_weights(runs[0] / "model.keras", tmp_path / "a.npz")
    second = _plain_keras_weights(runs[1] / "model.keras", tmp_path / "b.npz")
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()
