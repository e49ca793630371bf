"""End to end: secure aggregation gives the plain run's model; distributed noise is accounted."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import wait_until_gone  # noqa: E402

pytestmark = pytest.mark.slow


def _weights(run_dir: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(run_dir / "model.keras").get_weights()


def _last_row(run_dir: Path) -> dict[str, str]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))[-1]


def test_secure_aggregation_ends_with_the_plain_model(fedcare_cli, tmp_path):
    outs = {}
    for name, extra in (("plain", []), ("secure", ["--secure-aggregation"])):
        outs[name] = tmp_path / name
        proc, marker = fedcare_cli("simulate", "--rounds", "2", "--dp", "none", "--seed", "5",
                                   "--out", str(outs[name]), *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert wait_until_gone(marker, seconds=1.0) == []
    # The fixed-point encoding errs by < 1/scale (about 1e-12 here) per coordinate and round.
    for plain, secure in zip(_weights(outs["plain"]), _weights(outs["secure"]), strict=True):
        np.testing.assert_allclose(secure, plain, rtol=0, atol=1e-6)
    assert _last_row(outs["secure"])["participants"] == "4"
    report = (outs["secure"] / "report.md").read_text()
    assert "secure aggregation: the server saw only the sum" in report


def test_distributed_noise_epsilon_equals_opacus_for_the_effective_noise(fedcare_cli, tmp_path):
    from opacus.accountants import RDPAccountant

    out = tmp_path / "dist"
    proc, _ = fedcare_cli("simulate", "--rounds", "2", "--dp", "hospital", "--noise-mode",
                          "distributed", "--secure-aggregation", "--epsilon", "8",
                          "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    spent = []
    for ledger in sorted((out / "ledgers").glob("*.json")):
        data = json.loads(ledger.read_text())
        accountant = RDPAccountant()
        for entry in data["entries"]:
            assert (entry["level"], entry["sample_rate"], entry["steps"]) == ("hospital", 1.0, 1)
            accountant.step(noise_multiplier=entry["noise_multiplier"], sample_rate=1.0)
        spent.append(accountant.get_epsilon(delta=data["budget"]["delta"]))
    assert len(spent) == 4 and all(0 < eps <= 8.0 for eps in spent)
    assert float(_last_row(out)["epsilon_hospital_max"]) == pytest.approx(max(spent), rel=1e-5)
    assert "distributed noise" in (out / "report.md").read_text()
