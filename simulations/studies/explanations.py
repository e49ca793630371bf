r"""How reliable is the consortium's DP explanation? Its ranking against the pooled truth.

For each task, epsilon and seed, a real federated run (the real driver and ClientApp over an
in-process grid, fresh ledgers, patient-level DP, the explanation on by default) trains the
global model and releases the consortium explanation (``server.explanation``:
``explanation.json``). Against it:

- the truth: the mean absolute attribution per feature of the same final model over every
  hospital's training rows pooled, without clipping or noise (what no one may release);
- the zero-cost ranking, computed from what is already public (the released model and the
  public scaling), no patient row: for a logistic model its coefficients times the public
  scale (on public-scaled inputs, |w_j|: the logit change of one public-scale step of feature
  j); for an MLP the same at the public baseline, the gradient of the logit there (a local
  slope, blind to where the patients are).

Printed per (task, epsilon): the mean over seeds (and the spread) of the Spearman correlation
of each ranking with the truth's, and the overlap of their top 5 features. The explanation is
inside each hospital's budget (``explain.share`` of it, training calibrated around it).
Example (the docs' table, seeds 0-4, about 10 minutes on 2 cores)::

    python -m simulations.studies.explanations --out runs/explanations
"""

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import spearmanr

from client.app import build_client_app
from common.config import RunConfig
from common.explain.attribution import attribute, explained_output, is_linear
from common.explain.consortium import top_k_overlap
from common.tasks import task_for_config
from server.federation import run_federation
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy

TASKS = ("heart-disease", "breast-cancer")
EPSILONS = (1.0, 8.0)
SEEDS = (0, 1, 2, 3, 4)
HOSPITALS = 4
SETTINGS: dict[str, Any] = {"num-server-rounds": 5, "local-steps": 5}


def one_run(task: str, epsilon: float, seed: int, out: Path) -> dict[str, Any]:
    """Run the federation once; return the three importance vectors (DP, truth, zero-cost)."""
    run_dir = out / f"{task}-eps{epsilon:g}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = RunConfig.from_run_config({**SETTINGS, "task": task, "dp.mode": "patient",
                                        "dp.epsilon": epsilon, "seed": seed,
                                        "hospitals": HOSPITALS, "out-dir": str(run_dir)})
    nodes = {100 + i: {"partition-id": i, "num-partitions": HOSPITALS} for i in range(HOSPITALS)}
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
    run_federation(InProcessGrid(app, nodes, config.to_run_config()), config, run_dir)
    document = json.loads((run_dir / "explanation.json").read_text())
    spec = task_for_config(config)
    model = keras.saving.load_model(run_dir / "model.keras")
    hospitals = spec.load(HOSPITALS, seed=seed, partition="iid", alpha=0.5,
                          normalisation="public", missing_indicator=True)
    rows = np.concatenate([h.x_train for h in hospitals])
    baseline = np.zeros(rows.shape[1], dtype=np.float32)
    truth = np.abs(attribute(model, rows, baseline).values).mean(axis=0)
    return {"dp": np.asarray(document["importance"]), "truth": truth,
            "free": zero_cost_importance(model, baseline), "linear": is_linear(model),
            "released": len(document["released"])}


def zero_cost_importance(model: keras.Model, baseline: np.ndarray) -> np.ndarray:
    """|d logit / d x'_j| at the public baseline (x' public-scaled): |w_j| for a logistic
    model, a local slope for an MLP; computed from the released model alone.
    """
    x = tf.constant(baseline[None, :])
    with tf.GradientTape() as tape:
        tape.watch(x)
        logit = explained_output(model)(x)[:, 0]
    return np.abs(tape.gradient(logit, x).numpy()[0])


def scores(importance: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(Spearman correlation of the two rankings, top-5 overlap)."""
    return float(spearmanr(importance, truth).statistic), top_k_overlap(importance, truth, 5)


def _cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def main() -> None:
    """Run the grid and print the table (mean ± sd over seeds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/explanations"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    args = parser.parse_args()
    print("| task | epsilon | DP Spearman | DP top-5 | zero-cost Spearman | zero-cost top-5 |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks:
        for epsilon in args.epsilons:
            results = [one_run(task, epsilon, seed, args.out) for seed in args.seeds]
            dp = [scores(r["dp"], r["truth"]) for r in results]
            free = [scores(r["free"], r["truth"]) for r in results]
            print(f"| {task} | {epsilon:g} | {_cell([s for s, _ in dp])} | "
                  f"{_cell([o for _, o in dp])} | {_cell([s for s, _ in free])} | "
                  f"{_cell([o for _, o in free])} |", flush=True)


if __name__ == "__main__":
    main()
