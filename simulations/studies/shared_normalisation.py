r"""Heart-disease at patient level with shared normalisation: tune on validation rows, then test.

Every run is the real driver and the real ClientApp over an in-process grid (no Ray), each in
a run directory of its own (fresh ledgers), with the run's defaults unless said otherwise.

``tune``: settings are chosen without looking at a test row. Each hospital's training rows are
split once more (``VALIDATION_FRACTION``, seeded, stratified where both classes allow) into
rows it trains on and validation rows it is evaluated on; every grid point runs over the seeds
and the one with the best mean client-average validation accuracy (exact, on the final model)
is printed. ``final``: the chosen settings on the real split (all training rows, the test
rows), with and without the missing-value indicator, over the seeds; it prints per seed the
exact final metrics (the hospitals' own, from the final weights) against the ones the report
shows (the DP evaluation), their mean absolute difference, and the test-track epsilon each
hospital's ledger records. Examples::

    python -m simulations.studies.shared_normalisation tune --out runs/tune
    python -m simulations.studies.shared_normalisation final --out runs/final \
        --set learning-rate=0.3
"""

import argparse
import csv
import itertools
import json
import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from common.config import RunConfig
from common.dp.ledger import PrivacyLedger
from common.metrics import evaluation_statistics, metrics_from_statistics, sum_statistics
from common.tasks import HospitalData, get_task
from common.tasks.split import split_digest
from common.wire.modes import LedgerTrack, PrivacyLevel
from simulations.studies.privacy_sweep import parse_overrides

VALIDATION_FRACTION = 0.25
VALIDATION_SEED = 2023  # the validation split's own seed, fixed before any run
NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
GRID = {"learning-rate": (0.1, 0.3, 1.0), "dp.clipping-norm": (0.5, 1.0)}
METRICS = ("accuracy", "auc")


def validation_split(data: HospitalData) -> HospitalData:
    """The hospital with its training rows split into training and validation ("test") rows."""
    labels = data.y_train.astype(int)
    stratify = labels if np.bincount(labels, minlength=2).min() >= 2 else None
    train, valid = train_test_split(np.arange(data.num_train), test_size=VALIDATION_FRACTION,
                                    random_state=VALIDATION_SEED, stratify=stratify)
    x_train, y_train = data.x_train[train], data.y_train[train]
    x_valid, y_valid = data.x_train[valid], data.y_train[valid]
    return replace(data, x_train=x_train, y_train=y_train, x_test=x_valid, y_test=y_valid,
                   split_digest=split_digest(x_train, y_train, x_valid, y_valid))


@contextmanager
def validation_rows() -> Iterator[None]:
    """Within the block every hospital admitted trains on part of its training rows and is
    evaluated on the rest (its test rows are never loaded into a run).
    """
    import client.admission as admission

    original = admission.load_hospital

    def load(*args: Any, **kwargs: Any) -> HospitalData:
        return validation_split(original(*args, **kwargs))

    admission.load_hospital = load
    try:
        yield
    finally:
        admission.load_hospital = original


def run(config: RunConfig, run_dir: Path) -> list[np.ndarray]:
    """One federation in this process; the final global weights."""
    from client.app import build_client_app
    from server.federation import run_federation
    from simulations.engine.in_process_grid import InProcessGrid
    from simulations.engine.simulate import SimulatedHospitalPrivacy

    run_dir.mkdir(parents=True, exist_ok=True)
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
    return run_federation(InProcessGrid(app, NODES, config.to_run_config()), config, run_dir)


def exact_metrics(config: RunConfig, weights: list[np.ndarray], *, validation: bool
                  ) -> dict[str, float]:
    """Pooled and client-average accuracy and AUC of `weights`, exact, on the evaluated rows."""
    from client.hospital import load_hospital
    from client.training import get_trainer

    task = get_task(config.task)
    trainer = get_trainer(task)
    hospitals = [load_hospital(config.task, 4, i, seed=config.seed, partition="iid", alpha=0.5,
                               normalisation=config.normalisation.value,
                               missing_indicator=config.missing_indicator) for i in range(4)]
    if validation:
        hospitals = [validation_split(h) for h in hospitals]
    stats = [evaluation_statistics(task.kind, h.y_test, trainer.predict(weights, h.x_test))
             for h in hospitals]
    own = [metrics_from_statistics(task.kind, s) for s in stats]
    pooled = metrics_from_statistics(task.kind, sum_statistics(stats))
    out = {f"pooled_{m}": pooled[m] for m in METRICS}
    out.update({f"client_avg_{m}": float(np.nanmean([o[m] for o in own])) for m in METRICS})
    return out


def _config(overrides: dict[str, object], seed: int) -> RunConfig:
    return RunConfig.from_run_config({"task": "heart-disease", "dp.mode": "patient",
                                      "dp.epsilon": 1.0, **overrides, "seed": seed})


def tune(out: Path, seeds: list[int], base: dict[str, object]) -> None:
    """Print each grid point's mean client-average validation accuracy; the best last."""
    results = []
    for values in itertools.product(*GRID.values()):
        point = dict(zip(GRID, values, strict=True))
        scores = []
        for seed in seeds:
            config = _config({**base, **point}, seed)
            with validation_rows():
                weights = run(config, out / _name(point, seed))
            scores.append(exact_metrics(config, weights, validation=True)["client_avg_accuracy"])
        results.append((statistics.mean(scores), point))
        spread = statistics.stdev(scores) if len(scores) > 1 else float("nan")
        print(f"{point}: validation client-average accuracy {statistics.mean(scores):.3f} "
              f"+/- {spread:.3f} over seeds {seeds}", flush=True)
    best = max(results, key=lambda r: r[0])
    print(f"best on validation rows: {best[1]} ({best[0]:.3f})")


def final(out: Path, seeds: list[int], base: dict[str, object]) -> None:
    """Per seed and indicator setting: exact and reported final metrics, test-track epsilon."""
    for indicator in (True, False):
        rows = []
        for seed in seeds:
            config = _config({**base, "missing-indicator": indicator}, seed)
            run_dir = out / f"indicator-{indicator}-seed-{seed}"
            weights = run(config, run_dir)
            exact = exact_metrics(config, weights, validation=False)
            reported = _final_row(run_dir)
            rows.append((seed, exact, reported, _test_epsilons(run_dir)))
        _print_final(indicator, rows)


def _final_row(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        row = list(csv.DictReader(handle))[-1]
    return {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}


def _test_epsilons(run_dir: Path) -> list[float]:
    """Each hospital's test-track epsilon, Opacus on its ledger's recorded history."""
    out = []
    for path in sorted((run_dir / "ledgers").glob("*.json")):
        ledger = PrivacyLedger.read(path)
        out.append(ledger.epsilon_spent(PrivacyLevel.PATIENT, LedgerTrack.TEST))
    return out


def _print_final(indicator: bool, rows: list[tuple[int, dict[str, float], dict[str, float],
                                                   list[float]]]) -> None:
    keys = [f"{scope}_{m}" for m in METRICS for scope in ("pooled", "client_avg")]
    print(f"\nmissing-value indicator {'on' if indicator else 'off'}")
    for seed, exact, reported, spent in rows:
        cells = "  ".join(f"{k} {exact[k]:.3f}/{reported[k]:.3f} "
                          f"[{reported.get(k + '_low', math.nan):.3f}, "
                          f"{reported.get(k + '_high', math.nan):.3f}]" for k in keys)
        most = f"{max(spent):.4f}" if spent else "n/a (no DP)"
        print(f"seed {seed}: exact/reported {cells}  test-track epsilon max {most}")
    for k in keys:
        values = [exact[k] for _, exact, _, _ in rows]
        gaps = [abs(exact[k] - reported[k]) for _, exact, reported, _ in rows]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{k}: exact {statistics.mean(values):.3f} +/- {spread:.3f}; "
              f"mean |reported - exact| {statistics.mean(gaps):.3f}")
    print(json.dumps({"indicator": indicator, "client_avg_accuracy_exact": [
        round(exact["client_avg_accuracy"], 4) for _, exact, _, _ in rows]}))


def _name(point: dict[str, object], seed: int) -> str:
    return "-".join(f"{k}={v}" for k, v in point.items()) + f"-seed-{seed}"


def main() -> None:
    """Parse the command line and run ``tune`` or ``final``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("tune", "final"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="run-config overrides for every run")
    args = parser.parse_args()
    base = parse_overrides(args.set)
    (tune if args.stage == "tune" else final)(args.out, args.seeds, base)


if __name__ == "__main__":
    main()
