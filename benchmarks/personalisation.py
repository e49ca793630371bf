"""Benchmark: what each heart-disease hospital gets by joining, over seeds, at epsilon 1 and no DP.

For every seed (default 0-9: the README's seeds 0-4 and five fresh ones, 5-9) and each setting
(patient-level DP at epsilon 1, every release in the epsilon: training updates and the final
model's evaluation release; and ``--dp none``) it runs ``fedcare simulate``'s own simulation
with the default settings, in this process, then reads each simulated hospital's own report
(``ledgers/<hospital>.report.csv``, written by the hospital when the final model arrived:
``client.hospital_report``). It prints, per hospital and over hospitals (client average and
worst hospital), mean ± sd over seeds of accuracy, balanced accuracy and AUC for the global,
personal, local-only and majority-class predictors, the issue's checks, and the published
figures beside them with the protocol differences.

Every hyperparameter the hospitals choose (fine-tuning and local-only epochs, whether to keep
the global model) is chosen on a validation split of their training rows, never test rows.
Usage: ``python -m benchmarks.personalisation [--seeds 0 1 ...] [--runs DIR]`` (``--runs``
keeps the run directories and reuses finished ones).
"""

import argparse
import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

SETTINGS = {"epsilon 1": {"dp.mode": "patient", "dp.epsilon": 1.0},
            "dp none": {"dp.mode": "none"}}
MODELS = ("global", "personal", "local_only", "majority")
METRICS = ("accuracy", "balanced_accuracy", "auc")
PUBLISHED = [
    ("FLamby FedAvg", 0.685), ("FLamby FedYogi (best federated)", 0.731),
    ("FLamby local fine-tuning", 0.735), ("FENDA-FL (personalised)", 0.812),
]
PROTOCOL = (
    "Protocol differences: FLamby (NeurIPS 2022) and FENDA-FL (Tyler et al. 2023) report the "
    "client-average accuracy on the same four hospitals and the same 66/34 split without any "
    "differential privacy, FLamby with per-hospital z-scoring and a logistic regression, "
    "FENDA-FL with its own MLP and hyperparameters tuned per method; FLamby's fine-tuning "
    "starts from its FedAvg model. Here: shared public normalisation with missing-value "
    "indicators, 20 rounds of 1 local epoch, the figures are exact (each hospital's own, not "
    "the DP evaluation the server saw), and at epsilon 1 the global model is trained with "
    "patient-level DP-SGD while the personal and local-only models are trained at the "
    "hospital without DP (they never leave it).")


def run_one(setting: dict[str, object], seed: int, run_dir: Path) -> None:
    """Simulate the default heart-disease federation with `setting` and `seed` into `run_dir`
    (in this process), unless a finished run is already there.
    """
    if (run_dir / "report.md").is_file():
        return
    from common.config import RunConfig
    from simulations.engine.in_process_engine import Engine
    from simulations.engine.simulate import simulate

    run_dir.mkdir(parents=True, exist_ok=True)
    config = RunConfig.from_run_config({"task": "heart-disease", "seed": seed, **setting})
    simulate(config, run_dir, engine=Engine.IN_PROCESS)


def read_rows(run_dir: Path, *, retrain: bool = False) -> list[dict[str, str]]:
    """The hospitals' own report rows of the run (``simulations.engine.hospitals_exact``).

    With `retrain` each hospital's personal and local-only models are trained again from the
    run's final model with the hospital's own code and plan (``client.hospital_report``),
    e.g. after a change to how they are trained; the run itself is not repeated.
    """
    from simulations.engine.hospitals_exact import gather_rows

    if retrain:
        _retrain(run_dir)
    return gather_rows(run_dir)


def _retrain(run_dir: Path) -> None:
    """Train every hospital's personal and local-only models of the run again (its report)."""
    import json

    import keras

    from client.hospital import task_split
    from client.hospital_report import FinalModel, personalise_and_report
    from client.personalisation import hospital_plan, personal_info_path
    from client.training import get_trainer
    from common.config import RunConfig
    from common.tasks import get_task

    meta = json.loads((run_dir / "config.json").read_text())
    config = RunConfig.from_run_config(meta["run_config"])
    trainer = get_trainer(get_task(config.task))
    weights = [np.asarray(w) for w in keras.saving.load_model(run_dir / "model.keras")
               .get_weights()]
    hospitals = task_split(config.task, config.hospitals, seed=config.seed,
                           partition=config.partition, alpha=config.dirichlet_alpha,
                           normalisation=config.normalisation.value,
                           missing_indicator=config.missing_indicator)
    for index, data in enumerate(hospitals):
        ledger = run_dir / "ledgers" / f"{data.name}.json"
        personal_info_path(ledger).unlink(missing_ok=True)
        plan = hospital_plan(learning_rate=config.learning_rate, batch_size=config.batch_size,
                             run_seed=config.seed, hospital_index=index)
        personalise_and_report(trainer, data, FinalModel(str(meta["run_id"]),
                                                         config.num_server_rounds, weights),
                               plan, ledger)


def collect(runs: Path, seeds: list[int], *, retrain: bool = False
            ) -> dict[str, list[list[dict[str, str]]]]:
    """Run (or reuse) every setting and seed; the report rows per setting, one list per seed."""
    out: dict[str, list[list[dict[str, str]]]] = {}
    for name, setting in SETTINGS.items():
        out[name] = []
        for seed in seeds:
            run_dir = runs / name.replace(" ", "-") / f"seed{seed}"
            run_one(setting, seed, run_dir)
            rows = read_rows(run_dir, retrain=retrain)
            if not rows:
                sys.exit(f"{run_dir}: no hospital report (did the run finish?)")
            out[name].append(rows)
            sys.stderr.write(f"personalisation: {name}, seed {seed} done\n")
    return out


def _mean_sd(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    return f"{np.mean(finite):.3f} ± {np.std(finite):.3f}"


def per_seed(runs: list[list[dict[str, str]]]) -> dict[tuple[str, str, str], list[float]]:
    """(hospital or 'client avg' or 'worst hospital', model, metric) -> one value per seed."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for rows in runs:
        for metric in METRICS:
            for model in MODELS:
                chosen = {r["hospital"]: float(r[metric]) for r in rows if r["model"] == model}
                for hospital, value in chosen.items():
                    values[(hospital, model, metric)].append(value)
                finite = [v for v in chosen.values() if math.isfinite(v)]
                values[("client avg", model, metric)].append(float(np.mean(finite)))
                values[("worst hospital", model, metric)].append(float(np.min(finite)))
    return values


def table(name: str, runs: list[list[dict[str, str]]], seeds: list[int]) -> list[str]:
    """The markdown table of one setting: mean ± sd over seeds."""
    values = per_seed(runs)
    hospitals = sorted({r["hospital"] for r in runs[0]})
    sizes = {r["hospital"]: r["test_rows"] for r in runs[0]}
    lines = [f"### heart-disease, {name}: mean ± sd over seeds {seeds}", "",
             "| hospital | model | " + " | ".join(METRICS) + " |", "|---|---|---|---|---|"]
    for hospital in [*hospitals, "client avg", "worst hospital"]:
        label = f"{hospital} (n={sizes[hospital]})" if hospital in sizes else hospital
        for model in MODELS:
            cells = [_mean_sd(values[(hospital, model, m)]) for m in METRICS]
            lines.append(f"| {label} | {model} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def checks(name: str, runs: list[list[dict[str, str]]], target: float) -> list[str]:
    """The issue's done-when checks for one setting, each with its numbers."""
    values = per_seed(runs)
    hospitals = sorted({r["hospital"] for r in runs[0]})
    sizes = {r["hospital"]: int(r["test_rows"]) for r in runs[0]}
    personal = float(np.mean(values[("client avg", "personal", "accuracy")]))
    lines = [f"- {name}: personal models' client-average accuracy {personal:.3f} "
             f"(target >= {target}): {'met' if personal >= target else 'NOT met'}"]
    for hospital in hospitals:
        mean = {m: float(np.mean(values[(hospital, m, "accuracy")])) for m in MODELS}
        best = max(mean["personal"], mean["global"])
        floor = mean["majority"] - 1 / sizes[hospital]
        ok = best >= mean["local_only"] and best >= floor
        lines.append(f"  - {hospital}: better of personal/global {best:.3f} vs local-only "
                     f"{mean['local_only']:.3f} and majority - 1/n {floor:.3f}: "
                     f"{'met' if ok else 'NOT met'}")
    return lines


def main() -> None:
    """Run the seeds in both settings and print the tables, checks and published figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--runs", type=Path, default=None,
                        help="keep the run directories here (finished ones are reused)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the hospitals' personal and local-only models of reused "
                             "runs again (the hospitals' own code), without repeating the runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedcare-personalisation-") as scratch:
        runs = collect(args.runs or Path(scratch), args.seeds, retrain=args.retrain)
    lines: list[str] = []
    for name, per in runs.items():
        lines += table(name, per, args.seeds)
    lines += ["Done-when checks (accuracy, mean over seeds):", ""]
    for name, target in (("epsilon 1", 0.78), ("dp none", 0.80)):
        lines += checks(name, runs[name], target)
    lines += ["", "Published client-average accuracy on heart-disease (no DP):", ""]
    lines += [f"- {label}: {value:.3f}" for label, value in PUBLISHED]
    lines += ["", PROTOCOL]
    print("\n".join(lines))



if __name__ == "__main__":
    main()
