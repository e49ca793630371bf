"""The run report: report.md with PNG plots (metrics vs round, per-hospital bars)."""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def plot_epsilon_vs_round(rows: list[dict[str, str]], path: Path) -> None:
    """Plot the largest epsilon spent so far (over hospitals) at each level, per round."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    rounds = _values(rows, "round")
    for level in ("patient", "hospital"):
        values = _values(rows, f"epsilon_{level}_max")
        if any(v > 0 for v in values):
            ax.plot(rounds, values, marker="o", label=f"{level} level")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("epsilon spent (max over hospitals)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


UNIT_OF_PRIVACY = {
    "patient": "one patient's record (patient-level DP-SGD inside each hospital: per-example "
               "clipping, Gaussian noise on each batch, Poisson-sampled batches; the update that "
               "leaves is post-processing of it, whatever the server does)",
    "hospital": "one hospital's whole data set (DP-FedAvg, local noise: each hospital clips "
                "its update and adds Gaussian noise itself; accounted with sensitivity 2C)",
}


def privacy_statement(config: dict[str, object], epsilon: dict[str, dict[str, float]]) -> list[str]:
    """The report's privacy statement: unit, each hospital's epsilon and delta, exclusions."""
    mode = str(config.get("dp_mode"))
    unit = UNIT_OF_PRIVACY.get(mode, "")
    if mode == "hospital" and config.get("dp_noise_mode") == "distributed":
        unit = ("one hospital's whole data set (DP-FedAvg, distributed noise: each hospital adds "
                "a 1/sqrt(t) share of the noise, so only the secure-aggregation sum is private; "
                "accounted as a Gaussian mechanism on the sum with sensitivity C plus the "
                "worst-case rounding error, for the t contributors the protocol guarantees)")
    if mode == "none":
        return ["## Privacy", "", "**No differential privacy**: the updates that left the "
                "hospitals were not clipped or noised and are not private.", ""]
    lines = [
        "## Privacy statement", "",
        f"Unit of privacy: {unit}.", "",
        f"Accountant: Opacus {str(config.get('dp_accountant')).upper()}; every epsilon is "
        "Opacus's on the hospital's ledger entries (noise multiplier, sample rate, steps), "
        "summed over every run on that hospital's data.", "",
        "| hospital | epsilon spent | budget epsilon | delta |", "|---|---|---|---|",
    ]
    for name, spent in sorted(epsilon.items()):
        lines.append(f"| {name} | {spent[mode]:.4f} | {spent['budget_epsilon']:g} | "
                     f"{spent['budget_delta']:g} |")
    lines += [
        "",
        "Not covered by this guarantee: the test-set metrics each hospital reports (sums and "
        "score histograms of its test predictions), each hospital's normalisation statistics "
        "(they never leave it, but the model is trained on data scaled by them), how many and "
        "which rounds a hospital took part in or declined, and its budget settings.",
        "",
    ]
    return lines


def write_report(run_dir: Path, *, task: TaskSpec, hospitals: list[str], config: dict[str, object],
                 epsilon: dict[str, dict[str, float]] | None = None, stop_reason: str = "",
                 aborted_rounds: list[str] | None = None) -> Path:
    """Write report.md and its plots from the run directory's metrics.csv; return its path."""
    rows = _read_rows(run_dir / "metrics.csv")
    lines = [f"# fedcare run: {task.name}", ""]
    if stop_reason:
        lines += [f"**The run stopped early**: {stop_reason}", ""]
    if aborted_rounds:
        lines += ["**Secure aggregation aborted these rounds** (nothing was unmasked; the global "
                  "model stayed as it was):", "", *[f"- {why}" for why in aborted_rounds], ""]
    if not rows:
        lines += ["No round completed.", ""]
        (run_dir / "report.md").write_text("\n".join(lines))
        return run_dir / "report.md"
    plot_metrics_vs_round(rows, task, run_dir / "metrics_vs_round.png")
    plot_hospital_bars(rows[-1], task, hospitals, run_dir / "hospital_metrics.png")
    final = rows[-1]
    lines += [
        f"{len(rows)} rounds, {len(hospitals)} hospitals ({', '.join(hospitals)}), "
        f"server optimizer {config.get('server_optimizer')}, seed {config.get('seed')}, "
        f"differential privacy: {config.get('dp_mode')}"
        + (f" ({config.get('dp_noise_mode')} noise)" if config.get("dp_mode") == "hospital" else "")
        + (", secure aggregation: the server saw only the sum of the updates"
           if config.get("secagg_enabled") else "") + ".",
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
    lines += privacy_statement(config, epsilon or {})
    if config.get("dp_mode") != "none":
        plot_epsilon_vs_round(rows, run_dir / "epsilon_vs_round.png")
        lines += ["![epsilon vs round](epsilon_vs_round.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    return run_dir / "report.md"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")
