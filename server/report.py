"""The run report: report.md with PNG plots (metrics vs round, per-hospital bars)."""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402

from common.tasks.base import TaskSpec  # noqa: E402


def _read_rows(metrics_csv: Path) -> list[dict[str, str]]:
    with open(metrics_csv, newline="") as handle:
        return list(csv.DictReader(handle))


def _values(rows: list[dict[str, str]], column: str) -> list[float]:
    return [float(row[column]) if row.get(column) not in (None, "") else float("nan") for row in rows]


def plot_metrics_vs_round(rows: list[dict[str, str]], task: TaskSpec, path: Path) -> None:
    """Plot pooled and client-average metrics, and the pooled loss, against the round."""
    names = ("loss", *task.metric_names)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6))
    rounds = _values(rows, "round")
    for ax, metric in zip(axes, names, strict=True):
        ax.plot(rounds, _values(rows, f"pooled_{metric}"), marker="o", label="pooled")
        if metric != "loss":
            ax.plot(rounds, _values(rows, f"client_avg_{metric}"), marker="s", label="client avg")
        ax.set_xlabel("round")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hospital_bars(final: dict[str, str], task: TaskSpec, hospitals: list[str], path: Path) -> None:
    """Bar chart of each hospital's final metrics on its own test set."""
    fig, axes = plt.subplots(1, len(task.metric_names), figsize=(5 * len(task.metric_names), 3.6))
    for ax, metric in zip(axes, task.metric_names, strict=True):
        values = [float(final[f"{h}_{metric}"]) if final.get(f"{h}_{metric}") else float("nan")
                  for h in hospitals]
        ax.bar(hospitals, values, color="tab:blue")
        ax.axhline(float(final[f"client_avg_{metric}"]), color="tab:orange", ls="--", label="client avg")
        ax.set_title(f"final {metric} per hospital")
        ax.tick_params(axis="x", rotation=45)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(run_dir: Path, *, task: TaskSpec, hospitals: list[str], config: dict[str, object]) -> Path:
    """Write report.md and its plots from the run directory's metrics.csv; return its path."""
    rows = _read_rows(run_dir / "metrics.csv")
    lines = [f"# fedcare run: {task.name}", ""]
    if not rows:
        lines += ["No round completed.", ""]
        (run_dir / "report.md").write_text("\n".join(lines))
        return run_dir / "report.md"
    plot_metrics_vs_round(rows, task, run_dir / "metrics_vs_round.png")
    plot_hospital_bars(rows[-1], task, hospitals, run_dir / "hospital_metrics.png")
    final = rows[-1]
    lines += [
        f"{len(rows)} rounds, {len(hospitals)} hospitals ({', '.join(hospitals)}), "
        f"server optimizer {config.get('server_optimizer')}, seed {config.get('seed')}.",
        "",
        "## Final round",
        "",
        "| metric | pooled | client avg |",
        "|---|---|---|",
        f"| loss | {float(final['pooled_loss']):.4f} | |",
    ]
    lines += [
        f"| {m} | {float(final[f'pooled_{m}']):.4f} | {float(final[f'client_avg_{m}']):.4f} |"
        for m in task.metric_names
    ]
    lines += [
        "",
        "\"pooled\" is the metric on the union of all hospitals' test sets; \"client avg\" the "
        "unweighted mean of each hospital's metric on its own test set (FLamby's metric).",
        "",
        "## Metrics vs round",
        "",
        "![metrics vs round](metrics_vs_round.png)",
        "",
        "## Per hospital",
        "",
        "![per-hospital metrics](hospital_metrics.png)",
        "",
        f"Round seconds: first {float(rows[0]['seconds']):.2f} s (includes start-up), "
        f"median of the rest {_median(_values(rows[1:], 'seconds')):.3f} s.",
        "",
    ]
    (run_dir / "report.md").write_text("\n".join(lines))
    return run_dir / "report.md"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")
