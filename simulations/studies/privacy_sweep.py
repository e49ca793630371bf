r"""Privacy-utility sweep: final accuracy/AUC and epsilon spent, over DP settings and seeds.

Each setting is ``none`` or ``<level>:<epsilon>`` (level ``patient`` or ``hospital``); each runs
the real simulation once per seed and keeps its run directory under ``--out``. Prints a
markdown table of mean ± sd over seeds. Example::

    python -m simulations.studies.privacy_sweep --task heart-disease --settings none patient:1 \
        --seeds 5 --out runs/sweep
"""

import argparse
import csv
import statistics
from pathlib import Path

from common.config import DEFAULTS, RunConfig
from simulations.engine.simulate import simulate

HEADLINE = ("client_avg_accuracy", "client_avg_auc", "pooled_accuracy", "pooled_auc")


def parse_setting(setting: str) -> dict[str, object]:
    """``"none"`` -> no DP; ``"patient:1"`` -> patient level with epsilon 1."""
    if setting == "none":
        return {"dp.mode": "none"}
    level, _, epsilon = setting.partition(":")
    return {"dp.mode": level, "dp.epsilon": float(epsilon)}


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``["learning-rate=1.0", "clip-updates=true"]`` -> typed run-config overrides.

    Each value takes the type of the key's default; bools accept true/false only.

    Raises
    ------
    ValueError
        For an item without "=", an unknown key, or a value of the wrong type.
    """
    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with a run-config key")
        default = DEFAULTS[key]
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--set {item!r}: {key} takes true or false")
            overrides[key] = value.lower() == "true"
        else:
            overrides[key] = type(default)(value)
    return overrides


def final_row(run_dir: Path) -> dict[str, str]:
    """The last metrics.csv row of a run."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))[-1]


def summarize(values: list[float]) -> str:
    """Mean ± sd (population) to three decimals."""
    return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"


def main() -> None:
    """Run the sweep and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="heart-disease")
    parser.add_argument("--hospitals", type=int)
    parser.add_argument("--partition", default="iid")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--settings", nargs="+", default=["none", "patient:1"])
    parser.add_argument("--set", nargs="*", default=[], help="extra run-config KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    extra = parse_overrides(args.set)
    lines = ["| setting | " + " | ".join(HEADLINE) + " | epsilon spent (max) | per seed acc |",
             "|---" * (len(HEADLINE) + 3) + "|"]
    for setting in args.settings:
        rows = []
        for seed in range(args.seeds):
            overrides = {"task": args.task, "num-server-rounds": args.rounds, "seed": seed,
                         "partition": args.partition, "dirichlet-alpha": args.alpha,
                         **extra, **parse_setting(setting)}
            if args.hospitals:
                overrides["hospitals"] = args.hospitals
            config = RunConfig.from_run_config(overrides)
            run_dir = args.out / f"{setting.replace(':', '-')}-seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=False)
            simulate(config, run_dir)
            rows.append(final_row(run_dir))
        cells = [summarize([float(r[c]) for r in rows]) for c in HEADLINE]
        level = str(parse_setting(setting)["dp.mode"])
        spent = max((float(r.get(f"epsilon_{level}_max") or 0) for r in rows), default=0.0)
        per_seed = " ".join(f"{float(r['client_avg_accuracy']):.3f}" for r in rows)
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {spent:.3f} | {per_seed} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    (args.out / "sweep.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
