"""A run's TensorBoard events, as TensorBoard's own event reader sees them: one step per round,
the metrics.csv values, each round once after a resume.
"""

import csv
import math

import pytest

pytest.importorskip("tensorboard")  # the test extra; writing the events needs TensorFlow only

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.util.tensor_util import make_ndarray  # noqa: E402

from client.app import build_client_app  # noqa: E402
from common.config import RunConfig  # noqa: E402
from server.federation import run_federation  # noqa: E402
from server.run_directory import MetricsWriter, metrics_columns  # noqa: E402
from server.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog, scalar_tags  # noqa: E402
from simulations.engine.in_process_grid import InProcessGrid  # noqa: E402
from simulations.engine.simulate import SimulatedHospitalPrivacy  # noqa: E402
from tests.crashing_grid import CrashingGrid  # noqa: E402

HOSPITALS = ["cleveland", "hungary", "switzerland", "va"]
METRICS = ("accuracy", "auc")


def _events(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] as TensorBoard reads the directory; every tag a scalar."""
    reader = EventAccumulator(str(log_dir))
    reader.Reload()
    series = {}
    for tag in reader.Tags()["tensors"]:
        assert reader.SummaryMetadata(tag).plugin_data.plugin_name == "scalars", tag
        series[tag] = [(e.step, float(make_ndarray(e.tensor_proto))) for e in reader.Tensors(tag)]
    return series


def _csv_rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _expected(rows: list[dict[str, str]], tags: dict[str, str]
              ) -> dict[str, list[tuple[int, float]]]:
    """What the events should hold: each finite metrics.csv cell at its round (float32)."""
    import numpy as np

    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for column, tag in tags.items():
            cell = row.get(column, "")
            if cell and math.isfinite(float(cell)):
                series.setdefault(tag, []).append((int(row["round"]), float(np.float32(cell))))
    return series


def _row(round_: int, **cells) -> dict[str, object]:
    """A metrics.csv row as the driver files it (a real round of heart-disease, 4 hospitals)."""
    row: dict[str, object] = {
        "round": round_, "seconds": 0.52 + round_, "participants": 4,
        "pooled_loss": 0.69 - 0.01 * round_,
        "declined": 0, "rejected": 0, "epsilon_patient_max": 0.4 * round_,
        "epsilon_hospital_max": 0.0}
    for metric in METRICS:
        row[f"pooled_{metric}"] = 0.6 + 0.01 * round_
        row[f"client_avg_{metric}"] = 0.55 + 0.01 * round_
        row[f"client_avg_{metric}_hospitals"] = 4
        for index, hospital in enumerate(HOSPITALS):
            row[f"{hospital}_{metric}"] = 0.5 + 0.02 * index + 0.01 * round_
            row[f"test_rows_{hospital}"] = 40 + index
    for index, hospital in enumerate(HOSPITALS):
        row[f"epsilon_{hospital}"] = 0.1 * round_ * (index + 1)
    return {**row, **cells}


def test_tensorboard_log_writes_each_row_at_its_round_with_the_csv_values(tmp_path):
    log = TensorBoardLog(tmp_path / TENSORBOARD_DIR, metric_names=METRICS, hospitals=HOSPITALS)
    writer = MetricsWriter(tmp_path / "metrics.csv", metrics_columns(METRICS, HOSPITALS),
                           on_row=log.write_round)
    writer.append(_row(1))
    # Written and flushed by the log's thread: readable while the run goes on (before close).
    log.wait_written()
    assert {tag: steps for tag, steps in _events(tmp_path / TENSORBOARD_DIR).items()} == \
        _expected(_csv_rows(tmp_path), log.tags)
    # Switzerland's one-class test set has no AUC; a deferred round's seconds are unknown.
    writer.append(_row(2, switzerland_auc=float("nan"), seconds=""))
    log.close()

    events = _events(tmp_path / TENSORBOARD_DIR)
    assert events == _expected(_csv_rows(tmp_path), log.tags)
    assert set(events) == {
        "loss/pooled", "round/seconds", "round/participants", "round/declined", "round/rejected",
        *(f"{m}/{who}" for m in METRICS for who in ("pooled", "client_avg", *HOSPITALS)),
        *(f"epsilon/{h}" for h in HOSPITALS)}
    assert events["accuracy/hungary"] == [(1, pytest.approx(0.53)), (2, pytest.approx(0.54))]
    assert events["epsilon/va"] == [(1, pytest.approx(0.4)), (2, pytest.approx(0.8))]
    assert events["round/participants"] == [(1, 4.0), (2, 4.0)]
    assert [step for step, _ in events["auc/switzerland"]] == [1]  # no point for the NaN
    assert [step for step, _ in events["round/seconds"]] == [1]


def test_a_resumed_log_starts_over_with_the_checkpoints_rows(tmp_path):
    log_dir, columns = tmp_path / TENSORBOARD_DIR, metrics_columns(METRICS, HOSPITALS)
    first = TensorBoardLog(log_dir, metric_names=METRICS, hospitals=HOSPITALS)
    writer = MetricsWriter(tmp_path / "metrics.csv", columns, on_row=first.write_round)
    for round_ in (1, 2, 3):
        writer.append(_row(round_))
    first.close()
    # The checkpoint holds rounds 1-2 (round 3's row came after it); round 3 runs again.
    kept = writer.rows[:2]
    resumed = TensorBoardLog(log_dir, metric_names=METRICS, hospitals=HOSPITALS)
    writer = MetricsWriter(tmp_path / "metrics.csv", columns, rows=kept,
                           on_row=resumed.write_round)
    writer.append(_row(3, pooled_loss=0.5))
    resumed.close()
    events = _events(log_dir)
    assert events == _expected(_csv_rows(tmp_path), resumed.tags)
    assert events["loss/pooled"] == [(1, pytest.approx(0.68)), (2, pytest.approx(0.67)),
                                     (3, 0.5)]
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1


def test_the_driver_writes_one_step_per_round_also_across_a_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "home"))  # never the user's ~/.fedcare
    nodes = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
    # Every round's model evaluated under DP (eval-every 1): a release a round, no loss.
    config = RunConfig.from_run_config({"dp.mode": "patient", "local-steps": 2,
                                        "num-server-rounds": 4, "eval-every": 1})
    app = build_client_app(SimulatedHospitalPrivacy(config, tmp_path / "ledgers"))
    with pytest.raises(KeyboardInterrupt):
        run_federation(CrashingGrid(app, nodes, config.to_run_config(), crash_round=3),
                       config, tmp_path)
    # Killed in round 3: round 1 complete, round 2 filed without its (deferred) evaluation.
    events = _events(tmp_path / TENSORBOARD_DIR)
    assert events["round/participants"] == [(1, 4.0), (2, 4.0)]
    assert [step for step, _ in events["accuracy/pooled"]] == [1]
    assert "loss/pooled" not in events  # a DP evaluation releases no loss sum

    resumed = RunConfig.from_run_config({**config.to_run_config(), "resume": True})
    run_federation(InProcessGrid(app, nodes, resumed.to_run_config()), resumed, tmp_path)
    events = _events(tmp_path / TENSORBOARD_DIR)
    rows = _csv_rows(tmp_path)
    assert [r["round"] for r in rows] == ["1", "2", "3", "4"]
    assert events == _expected(rows, scalar_tags(METRICS, HOSPITALS))
    for tag in ("accuracy/pooled", "accuracy/client_avg", "auc/pooled", "accuracy/va",
                "epsilon/cleveland", "round/participants"):
        assert [step for step, _ in events[tag]] == [1, 2, 3, 4], tag
    # Patient-level DP: each hospital's epsilon grows round by round.
    for hospital in HOSPITALS:
        spent = [value for _, value in events[f"epsilon/{hospital}"]]
        assert 0 < spent[0] < spent[-1] <= config.dp_epsilon
