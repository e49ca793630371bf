"""Under DP the run evaluates its planned models once each, as releases charged on test tracks.

The real driver and ClientApp over an in-process grid of real Flower Messages.
"""

import csv
import math

import pytest
from opacus.accountants import RDPAccountant

from client.app import build_client_app
from common.config import RunConfig
from common.dp.ledger import PrivacyLedger
from common.wire.modes import LedgerTrack, PrivacyLevel
from server.federation import run_federation
from server.privacy_cost import evaluation_noise_multiplier, privacy_cost_lines
from server.report import epsilon_text
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy

NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}


def _run(run_dir, **changes):
    config = RunConfig.from_run_config({"dp.mode": "patient", "local-steps": 2,
                                        "num-server-rounds": 3, **changes})
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
    run_federation(InProcessGrid(app, NODES, config.to_run_config()), config, run_dir)
    with open(run_dir / "metrics.csv", newline="") as handle:
        return config, list(csv.DictReader(handle))


def _test_entries(run_dir):
    return {path.stem: [e for e in PrivacyLedger.read(path).entries
                        if e.track == LedgerTrack.TEST]
            for path in sorted((run_dir / "ledgers").glob("*.json"))}


def test_by_default_only_the_final_model_is_evaluated_once_within_the_test_budget(tmp_path):
    config, rows = _run(tmp_path)

    assert [bool(r["pooled_accuracy"]) for r in rows] == [False, False, True]
    final = rows[-1]
    for scope in ("pooled", "client_avg"):
        for metric in ("accuracy", "auc"):
            low, value, high = (float(final[f"{scope}_{metric}_low"]),
                                float(final[f"{scope}_{metric}"]),
                                float(final[f"{scope}_{metric}_high"]))
            assert 0.0 <= low <= high <= 1.0 and low < high
            assert low - 0.05 <= value <= high + 0.05  # the point near its interval
    assert final["pooled_loss"] == "nan" or math.isnan(float(final["pooled_loss"] or "nan"))
    z = evaluation_noise_multiplier(config)
    for name, entries in _test_entries(tmp_path).items():
        (entry,) = entries  # one release per hospital
        assert entry.round == 3 and entry.event.noise_multiplier == pytest.approx(z, rel=1e-3)
        accountant = RDPAccountant()
        accountant.step(noise_multiplier=entry.event.noise_multiplier, sample_rate=1.0)
        spent = PrivacyLedger.read(tmp_path / "ledgers" / f"{name}.json").epsilon_spent(
            PrivacyLevel.PATIENT, LedgerTrack.TEST)
        assert spent == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
        assert spent <= config.dp_epsilon
    report = (tmp_path / "report.md").read_text()
    assert "Evaluated under DP" in report and "test rows: epsilon spent" in report
    assert "a Gaussian DP release charged on the hospital's ledger, test track" in report
    for name in _test_entries(tmp_path):  # the statement shows each test track's epsilon
        spent = PrivacyLedger.read(tmp_path / "ledgers" / f"{name}.json").epsilon_spent(
            PrivacyLevel.PATIENT, LedgerTrack.TEST)
        (row,) = [line for line in report.splitlines() if line.startswith(f"| {name} |")]
        assert row.split(" | ")[3] == epsilon_text(spent)


def test_eval_every_evaluates_more_models_each_costing_its_share(tmp_path):
    config, rows = _run(tmp_path, **{"eval-every": 1})
    assert all(r["pooled_accuracy"] for r in rows)
    assert all(len(entries) == 3 for entries in _test_entries(tmp_path).values())
    lines = " ".join(privacy_cost_lines(config))
    assert "3 release(s) per hospital" in lines
    assert f"noise multiplier {evaluation_noise_multiplier(config):.3g}" in lines
