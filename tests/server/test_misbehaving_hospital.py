"""One hospital sends a different malformed reply every round: the run goes on without it.

The real driver, rounds and screening talk to the real ClientApp through real Flower Messages
(an in-process grid, no Ray): the result must equal the run in which that hospital declines
every round, and the run must still write its model and report.
"""

import csv

import numpy as np
import pytest

from client.app import build_client_app
from common.config import RunConfig
from server.federation import run_federation
from simulations.drills.fault_injection import MALFORMATIONS, Fault, fault_mod
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy

HONEST = ("cleveland", "switzerland", "va")


def _run(tmp_path, kind):
    config = RunConfig.from_run_config({"dp.mode": "none", "local-steps": 2,
                                        "num-server-rounds": len(MALFORMATIONS)})
    run_dir = tmp_path / kind
    run_dir.mkdir()
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"),
                           mods=[fault_mod(Fault(kind, hospital=1))])
    nodes = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
    weights = run_federation(InProcessGrid(app, nodes, config.to_run_config()), config, run_dir)
    with open(run_dir / "metrics.csv", newline="") as handle:
        return weights, list(csv.DictReader(handle)), run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("misbehaving")
    return _run(tmp, "malformed"), _run(tmp, "decline")


def test_every_malformed_reply_is_rejected_and_the_run_finishes(runs):
    (_, rows, run_dir), _ = runs
    assert [int(r["round"]) for r in rows] == list(range(1, len(MALFORMATIONS) + 1))
    assert all(r["participants"] == "3" for r in rows)
    assert all(int(r["rejected"]) >= 1 for r in rows)
    assert (run_dir / "model.keras").is_file() and (run_dir / "report.md").is_file()


def test_the_model_equals_the_run_where_that_hospital_declines(runs):
    (malformed, bad_rows, _), (declined, good_rows, _) = runs
    for a, b in zip(malformed, declined, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for bad, good in zip(bad_rows, good_rows, strict=True):
        for name in HONEST:
            assert bad[f"{name}_accuracy"] == good[f"{name}_accuracy"]
            assert bad[f"{name}_auc"] == good[f"{name}_auc"]


def test_stolen_statistics_never_replace_the_honest_hospitals_row(runs):
    # In the "another's identity" round hungary's node claims switzerland: switzerland's row
    # must be its own, the same as in the run without the impostor.
    (_, bad_rows, _), (_, good_rows, _) = runs
    stolen = [name for name, _ in MALFORMATIONS].index("another's identity")
    assert bad_rows[stolen]["switzerland_accuracy"] == good_rows[stolen]["switzerland_accuracy"]


def _raise_from_round(first_bad_round):
    """A mod: every hospital's handler raises from `first_bad_round` on."""
    from simulations.drills.fault_injection import _round_of

    def mod(msg, context, call_next):
        if _round_of(msg) >= first_bad_round:
            raise RuntimeError("injected: every hospital fails")
        return call_next(msg, context)

    return mod


def test_a_run_that_must_stop_still_writes_model_metrics_and_report(tmp_path):
    config = RunConfig.from_run_config({"dp.mode": "none", "local-steps": 2,
                                        "num-server-rounds": 4})
    app = build_client_app(SimulatedHospitalPrivacy(config, tmp_path / "ledgers"),
                           mods=[_raise_from_round(3)])
    nodes = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
    from server.checkpoint import load_latest_checkpoint
    from server.strategy import FederationError

    with pytest.raises(FederationError, match="no hospital returned a usable update"):
        run_federation(InProcessGrid(app, nodes, config.to_run_config()), config, tmp_path)
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["round"] for r in rows] == ["1", "2"]  # the rounds that completed
    report = (tmp_path / "report.md").read_text()
    assert "stopped early" in report and "injected: every hospital fails" in report
    import keras

    saved = keras.saving.load_model(tmp_path / "model.keras").get_weights()
    last = load_latest_checkpoint(tmp_path / "checkpoint")
    assert last.round == 2
    for a, b in zip(saved, last.weights, strict=True):
        np.testing.assert_array_equal(a, b)  # the last completed round's model


def test_a_failure_inside_the_driver_still_writes_the_outputs(tmp_path, monkeypatch):
    import server.federation as federation

    config = RunConfig.from_run_config({"dp.mode": "none", "local-steps": 2,
                                        "num-server-rounds": 3})
    app = build_client_app(SimulatedHospitalPrivacy(config, tmp_path / "ledgers"))
    nodes = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
    real = federation.save_checkpoint
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(federation, "save_checkpoint", crash_on_second)
    with pytest.raises(OSError, match="disk full"):
        run_federation(InProcessGrid(app, nodes, config.to_run_config()), config, tmp_path)
    assert (tmp_path / "model.keras").is_file()
    assert "the run failed: disk full" in (tmp_path / "report.md").read_text()
    with open(tmp_path / "metrics.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2
