"""The run report: report.md with PNG plots (metrics vs round, per-hospital bars)."""

import csv
import math
import textwrap
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from common.dp.accounting import AccountantName  # noqa: E402
from common.tasks.base import TaskSpec  # noqa: E402
from common.wire.modes import DpMode, NoiseMode  # noqa: E402
from common.wire.statement import statement_lines as manifest_lines  # noqa: E402
from server.collusion import SecureTrust, statement_lines  # noqa: E402

METRIC_LABELS = {"loss": "loss", "accuracy": "accuracy", "auc": "AUC", "mae": "MAE",
                 "r2": "R\u00b2"}
NA_HATCH = "//"
NA_LABEL = "n/a: undefined on that test set (e.g. AUC with one class)"


def _read_rows(metrics_csv: Path) -> list[dict[str, str]]:
    with open(metrics_csv, newline="") as handle:
        return list(csv.DictReader(handle))


def _value(row: dict[str, str], column: str) -> float:
    """The row's value in `column` as a float; NaN when absent or empty."""
    text = row.get(column)
    return float(text) if text not in (None, "") else float("nan")


def _values(rows: list[dict[str, str]], column: str) -> list[float]:
    return [_value(row, column) for row in rows]


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def epsilon_text(value: float) -> str:
    """An epsilon for a label: ``+inf (unbounded)`` for infinity, else 3 significant digits."""
    return "+inf (unbounded)" if math.isinf(value) else f"{value:.3g}"


def plot_title(task: TaskSpec, config: dict[str, object],
               epsilon: dict[str, dict[str, float]] | None = None) -> str:
    """The plots' title: task, DP level and the epsilon budget (and the most spent, if known)."""
    mode = str(config.get("dp_mode", "none"))
    if mode == "none":
        return f"{task.name} \u2014 no differential privacy (updates not private)"
    budgets = sorted({float(s["budget_epsilon"]) for s in (epsilon or {}).values()
                      if "budget_epsilon" in s})
    if not budgets and config.get("dp_epsilon") is not None:
        budgets = [float(str(config["dp_epsilon"]))]
    short = [("+inf" if math.isinf(b) else f"{b:g}") for b in budgets]
    budget = ("budget \u03b5 " + " / ".join(short)) if budgets else ""
    spent = [float(s[mode]) for s in (epsilon or {}).values() if mode in s]
    most = f", most spent {epsilon_text(max(spent))}" if spent else ""
    return f"{task.name} \u2014 DP {mode} level, {budget}{most}"


def coverage_text(rows: list[dict[str, str]], metric: str, total: int) -> str:
    """How many hospitals the client average of `metric` covers over `rows`, e.g. ``3/4``
    (``3-4/4`` if it varied); empty if every hospital was always covered or it is unknown.
    """
    counts = [int(v) for v in _values(rows, f"client_avg_{metric}_hospitals") if math.isfinite(v)]
    if not counts or (min(counts) == max(counts) == total):
        return ""
    low, high = min(counts), max(counts)
    return f"{low}/{total}" if low == high else f"{low}-{high}/{total}"


def _chance_line(ax: Axes, metric: str, row: dict[str, str]) -> None:
    """Draw the chance level of `metric` (AUC 0.5; accuracy: the pooled majority-class rate;
    R\u00b2 0: predicting the mean), labelled with what it is.
    """
    if metric == "auc":
        ax.axhline(0.5, color="0.35", ls=":", lw=1.2, label="chance (AUC 0.5)")
    elif metric == "accuracy":
        rate = _value(row, "majority_rate_pooled")
        if math.isfinite(rate):
            ax.axhline(rate, color="0.35", ls=":", lw=1.2,
                       label=f"chance: majority-class rate {rate:.2f}")
    elif metric == "r2":
        ax.axhline(0.0, color="0.35", ls=":", lw=1.2, label="R\u00b2 0 (predicting the mean)")


def metrics_vs_round_figure(rows: list[dict[str, str]], task: TaskSpec, hospitals: list[str],
                            title: str) -> Figure:
    """Pooled and client-average metrics, and the pooled loss, against the round."""
    names = ("loss", *task.metric_names)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.0), squeeze=False)
    rounds = _values(rows, "round")
    for ax, metric in zip(axes[0], names, strict=True):
        ax.plot(rounds, _values(rows, f"pooled_{metric}"), marker="o", label="pooled")
        if metric != "loss":
            covered = coverage_text(rows, metric, len(hospitals))
            ax.plot(rounds, _values(rows, f"client_avg_{metric}"), marker="s",
                    label="client avg" + (f" (over {covered} hospitals)" if covered else ""))
            _chance_line(ax, metric, rows[-1])
        ax.set_xlabel("round")
        ax.set_ylabel(f"{_label(metric)} on the test sets")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(_label(metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def hospital_bars_figure(final: dict[str, str], task: TaskSpec, hospitals: list[str],
                         title: str) -> Figure:
    """Each hospital's final metrics on its own test set, with its test-set size (n).

    A NaN value is a hatched bar labelled "n/a" over the whole axis height, never an empty
    slot that reads as 0; the client-average line says how many hospitals it covers; the
    chance level is drawn (AUC 0.5; accuracy: each hospital's own majority-class rate).
    """
    metrics = task.metric_names
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    x = np.arange(len(hospitals))
    sizes = [_value(final, f"test_rows_{h}") for h in hospitals]
    ticks = [f"{h}\nn={int(n)}" if math.isfinite(n) else h for h, n in zip(hospitals, sizes,
                                                                          strict=True)]
    for ax, metric in zip(axes[0], metrics, strict=True):
        values = np.array([_value(final, f"{h}_{metric}") for h in hospitals])
        finite = np.isfinite(values)
        bars = ax.bar(x[finite], values[finite], color="tab:blue", label="final value")
        ax.bar_label(bars, fmt="%.2f", fontsize="small")
        bounded = metric in ("accuracy", "auc")
        top = 1.05 if bounded else (float(np.max(np.abs(values[finite]))) * 1.1
                                    if finite.any() else 1.0)
        low = 0.0 if bounded or not finite.any() else min(0.0, float(np.min(values[finite])))
        if (~finite).any():
            ax.bar(x[~finite], top - low, bottom=low, fill=False, hatch=NA_HATCH,
                   edgecolor="0.55", label=NA_LABEL)
            for position in x[~finite]:
                ax.text(position, (top + low) / 2, "n/a", ha="center", va="center",
                        fontweight="bold", bbox={"facecolor": "white", "edgecolor": "none"})
        average = _value(final, f"client_avg_{metric}")
        covered = _value(final, f"client_avg_{metric}_hospitals")
        count = (int(covered) if math.isfinite(covered) else int(finite.sum()))
        if math.isfinite(average):
            ax.axhline(average, color="tab:orange", ls="--",
                       label=f"client avg {average:.2f} (over {count}/{len(hospitals)} hospitals)")
        if metric == "accuracy":
            rates = np.array([_value(final, f"majority_rate_{h}") for h in hospitals])
            known = np.isfinite(rates)
            if known.any():
                ax.hlines(rates[known], x[known] - 0.4, x[known] + 0.4, colors="black",
                          linestyles=":", lw=1.5,
                          label="chance: the hospital's majority-class rate")
        else:
            _chance_line(ax, metric, final)
        ax.set_ylim(low, top if bounded else None)
        ax.set_xticks(x, ticks)
        ax.set_xlabel("hospital (n = test-set rows)")
        ax.set_ylabel(f"final {_label(metric)} on its own test set")
        ax.set_title(f"final {_label(metric)} per hospital")
        ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2,
                  frameon=False)  # below the axes: never over a bar
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def epsilon_figure(rows: list[dict[str, str]], hospitals: list[str], config: dict[str, object],
                   epsilon: dict[str, dict[str, float]] | None, title: str) -> Figure:
    """Each hospital's cumulative epsilon per round, with its budget as a dashed line.

    Curves come from the ``epsilon_<hospital>`` columns; without them (not recorded), the
    largest over hospitals is drawn and labelled so. An unbounded (+inf) epsilon spent or
    budget is labelled as such rather than drawn off the axes.
    """
    mode = str(config.get("dp_mode"))
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    rounds = _values(rows, "round")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    per_hospital = [h for h in hospitals
                    if any(math.isfinite(v) or math.isinf(v)
                           for v in _values(rows, f"epsilon_{h}"))]
    curves = ({h: _values(rows, f"epsilon_{h}") for h in per_hospital} if per_hospital else
              {"max over hospitals (per-hospital values not recorded)":
               _values(rows, f"epsilon_{mode}_max")})
    budgets = {h: float(s["budget_epsilon"]) for h, s in (epsilon or {}).items()
               if "budget_epsilon" in s}
    if not budgets and config.get("dp_epsilon") is not None:
        budgets = {h: float(str(config["dp_epsilon"])) for h in curves}
    finite_values = [v for vs in curves.values() for v in vs if math.isfinite(v)]
    finite_values += [b for b in budgets.values() if math.isfinite(b)]
    ceiling = max(finite_values, default=1.0) * 1.15 or 1.0
    for index, (name, values) in enumerate(curves.items()):
        color = colors[index % len(colors)]
        shown = [v if math.isfinite(v) else float("nan") for v in values]
        ax.plot(rounds, shown, marker="o", color=color, label=name)
        for r, v in zip(rounds, values, strict=True):
            if math.isinf(v):  # off the scale: a marker at the top, labelled
                ax.plot([r], [ceiling], marker="^", color=color, ls="none",
                        label=f"{name}: \u03b5 +inf (unbounded)")
                ax.annotate("+inf", (r, ceiling), textcoords="offset points", xytext=(0, 6),
                            ha="center", va="bottom", color=color)
    shared = set(budgets.values())
    if len(shared) == 1:
        budget = shared.pop()
        if math.isinf(budget):
            ax.plot([], [], ls="--", color="0.3", label="budget: unbounded (\u03b5 = +inf)")
        else:
            ax.axhline(budget, ls="--", color="0.3",
                       label=f"budget \u03b5 = {budget:g} (every hospital)")
    else:
        for name, budget in budgets.items():
            color = colors[list(curves).index(name) % len(colors)] if name in curves else "0.3"
            if math.isinf(budget):
                ax.plot([], [], ls="--", color=color, label=f"{name} budget: unbounded (+inf)")
            else:
                ax.axhline(budget, ls="--", color=color, label=f"{name} budget {budget:g}")
    unbounded = any(math.isinf(v) for vs in curves.values() for v in vs)
    ax.set_ylim(0, ceiling * (1.2 if unbounded else 1.08))  # room for a +inf label
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    delta = config.get("dp_delta")
    ax.set_ylabel(f"{mode}-level \u03b5 spent so far" + (f" (\u03b4 = {delta:g})"
                                                          if isinstance(delta, float) else ""))
    ax.set_title("privacy spent per hospital vs its budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.suptitle("\n".join(textwrap.wrap(title, 80)), fontsize="medium")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write `fig` to `path` (PNG) and free it."""
    fig.savefig(path, dpi=110)
    plt.close(fig)


UNIT_OF_PRIVACY = {
    "patient": "one patient's record (patient-level DP-SGD inside each hospital: per-example "
               "clipping, Gaussian noise on each batch, Poisson-sampled batches; the update that "
               "leaves is post-processing of it, whatever the server does)",
    "hospital": "one hospital's whole data set (DP-FedAvg, local noise: each hospital clips "
                "its update and adds Gaussian noise itself; accounted with sensitivity 2C)",
}


def privacy_statement(config: dict[str, object], epsilon: dict[str, dict[str, float]],
                      trust: SecureTrust | None = None, rounds: int = 0) -> list[str]:
    """The report's privacy statement: unit, each hospital's epsilon and delta, exclusions.

    With secure aggregation, ``trust`` gives t, c and h as numbers (``server.collusion``) and
    ``rounds`` the completed rounds the curious-participant epsilon is computed over.
    """
    mode = str(config.get("dp_mode"))
    unit = UNIT_OF_PRIVACY.get(mode, "")
    if mode == "hospital" and config.get("dp_noise_mode") == "distributed":
        numbers = (f"h = {trust.honest} (t = {trust.threshold}, c = {trust.colluders}: "
                   f"h <= t - c = {trust.threshold - trust.colluders})"
                   if trust is not None else "h (not recorded)")
        unit = ("one hospital's whole data set (DP-FedAvg, distributed noise: every hospital adds "
                f"the same 1/sqrt(h) share of the run's noise, {numbers}, so only the "
                "secure-aggregation sum is private; accounted as a Gaussian mechanism on the sum "
                "with sensitivity 2(C + r), replacing one hospital's data, r the worst-case "
                "rounding error). **Assumption**: every round has at least h honest contributors "
                "(each hospital checked h <= t - c, t the threshold, c the roster's colluding "
                "hospitals, which no hospital accepts below its own minimum)")
    secure = _secure_aggregation_lines(config, trust)
    if trust is not None and mode != "none":
        accountant = (AccountantName.PRV if config.get("dp_accountant") == "prv"
                      else AccountantName.RDP)
        secure = statement_lines(trust, rounds=rounds, delta=float(str(config.get("dp_delta"))),
                                 accountant=accountant) + secure
    if mode == "none":
        return ["## Privacy", "", "**No differential privacy**: the updates and evaluation "
                "statistics that left the hospitals were exact (not noised) and are not "
                "private.", "", *what_leaves(config), "", *secure]
    lines = [
        "## Privacy statement", "",
        f"Unit of privacy: {unit}.", "",
        "Threat model: the coordinating server may deviate from the protocol in any way (any "
        "run config, round settings or weights, repeated or reordered requests); other "
        "hospitals may collude with it up to the number each hospital assumes. Each "
        "hospital's guarantee is computed only from what it set or verified itself: its node "
        "config (or fedcare's strict defaults), its pinned schema and roster, its own ledger. "
        "Both hospital-level noise modes account one adjacency, replacing one hospital's data "
        "(sensitivity 2C); a hospital-level release also counts at patient level, and after a "
        "patient-level release the hospital-level epsilon is unbounded.", "",
        f"Accountant: Opacus {str(config.get('dp_accountant')).upper()}; every epsilon is "
        "Opacus's on the hospital's ledger entries (noise multiplier, sample rate, steps), "
        "composed over every run on that hospital's data.", "",
        "Two ledger tracks: releases of training rows (updates) and of test rows "
        "(evaluations), each with its own budget. With the split pinned in the ledger before "
        "its first release (a run whose split differs is declined), every patient is on one "
        "side for the ledger's whole life and the tracks compose in parallel: a patient's "
        "epsilon is the larger of the two; otherwise they compose sequentially. At hospital "
        "level the unit is the whole data set and one track composes both.", "",
        *_epsilon_table(mode, epsilon),
        "",
        *what_leaves(config),
        "",
        *secure,
    ]
    return lines


def _epsilon_table(mode: str, epsilon: dict[str, dict[str, float]]) -> list[str]:
    """Each hospital's epsilon and delta per ledger track, and how the tracks compose."""
    lines = ["| hospital | training rows: epsilon spent | budget (epsilon, delta) | test rows: "
             "epsilon spent | test budget (epsilon, delta) | a patient's epsilon |",
             "|---|---|---|---|---|---|"]
    for name, spent in sorted(epsilon.items()):
        used = epsilon_text(spent[mode])
        test = spent.get("test", 0.0)
        if mode == "hospital":
            patient = f"{epsilon_text(spent[mode])} (hospital level: both tracks composed)"
        elif "total" in spent:
            how = ("the larger track: split pinned, parallel" if spent.get("parallel")
                   else "both tracks composed sequentially: no split pinned first")
            patient = f"{epsilon_text(spent['total'])} ({how})"
        else:
            patient = "not reported"
        lines.append(f"| {name} | {used} | {epsilon_text(spent['budget_epsilon'])}, "
                     f"{spent['budget_delta']:g} | {epsilon_text(test)} | "
                     f"{epsilon_text(spent.get('test_budget_epsilon', math.nan))}, "
                     f"{spent.get('test_budget_delta', math.nan):g} | {patient} |")
    return lines


def what_leaves(config: dict[str, object]) -> list[str]:
    """What leaves a hospital in this run's mode, from the reply manifest: every part is a DP
    release on a ledger track or listed as not covered with why, then the run's own
    exclusions (per-hospital normalisation, evaluations seen one by one).
    """
    mode = DpMode(str(config.get("dp_mode", "patient")))
    noise = NoiseMode(str(config.get("dp_noise_mode", "local")))
    secure = bool(config.get("secagg_enabled"))
    lines = ["What leaves each hospital (from the reply manifest of this run's mode):", "",
             *manifest_lines(mode, noise, secure)]
    if config.get("normalisation") == "per-hospital":
        lines.append("- not covered: each hospital's own normalisation statistics "
                     "(normalisation 'per-hospital'): they never leave it, but every release "
                     "is computed from rows scaled by them, so one patient's record moves "
                     "them outside the unit of privacy")
    if secure and mode != DpMode.NONE:
        lines.append("- the evaluation releases are sent beside the masked update, each on its "
                     "own (not summed under secure aggregation); each is private on its own "
                     "(local noise), at its hospital's test-track epsilon")
    return lines


def _secure_aggregation_lines(config: dict[str, object],
                              trust: SecureTrust | None = None) -> list[str]:
    """What secure aggregation guarantees in this run (empty without it)."""
    if not config.get("secagg_enabled"):
        return []
    digest = str(config.get("secagg_roster_sha256") or "")
    c = f"c = {trust.colluders}" if trust is not None else "c"
    t = f" of at least t = {trust.threshold} hospitals" if trust is not None else ""
    return [
        "Secure aggregation (Bonawitz et al. 2017, active-adversary version): the server "
        f"learned only the sum of each round's signed survivor set{t}, even if it deviated, "
        f"as long as at most the roster's {c} hospitals colluded with it; every key was "
        f"signed with a key on the consortium roster (sha256 {digest or 'unknown'}); every "
        "hospital confirming each member's key fingerprint with that member is the trust "
        "anchor. Not covered: a hospital's input within the encoding's range can "
        "move the mean by up to range/n per coordinate (no norm proof on masked input), and "
        "the server learns who took part.", ""]


# The README's 5-seed figures (seeds 0-4, final client-average accuracy, mean +/- standard
# deviation; exact: the hospitals' own metrics of the final model) for heart-disease with every
# other setting at its default: (task, dp mode, epsilon or None) -> (mean, sd).
README_SPREAD = {
    ("heart-disease", "patient", 1.0): (0.813, 0.012),
    ("heart-disease", "none", None): (0.820, 0.008),
}
# Under DP the report shows the DP evaluation: its mean absolute difference from the exact
# figure over the same seeds (python -m simulations.studies.shared_normalisation final).
README_REPORTED_GAP: dict[tuple[str, str, float | None], float] = {
    ("heart-disease", "patient", 1.0): 0.046}
# Settings that shape the result; a run that differs from the defaults in any of these is not
# what the README's table measured.
SPREAD_SETTINGS = ("num_server_rounds", "hospitals", "partition", "local_epochs", "batch_size",
                   "learning_rate", "server_optimizer", "server_learning_rate", "weighting",
                   "local_steps", "aggregator", "clip_updates", "dp_delta", "dp_clipping_norm",
                   "dp_update_clipping_norm", "dp_accountant", "secagg_enabled",
                   "eval_every", "normalisation", "missing_indicator")


def _default_settings() -> dict[str, object]:
    from common.config import RunConfig

    return RunConfig().as_dict()


def expected_spread(config: dict[str, object], final: dict[str, str],
                    defaults: dict[str, object] | None = None) -> list[str]:
    """The report's paragraph on the spread to expect across seeds (from the README's table).

    Parameters
    ----------
    config : dict
        The run's settings (``RunConfig.as_dict()``).
    final : dict
        The last metrics.csv row (for this run's client-average accuracy).
    defaults : dict, optional
        The default settings (``RunConfig().as_dict()`` if not given).
    """
    mode = str(config.get("dp_mode"))
    if mode != "none" and not isinstance(config.get("dp_epsilon"), int | float):
        return []
    epsilon = None if mode == "none" else float(str(config.get("dp_epsilon")))
    spread = README_SPREAD.get((str(config.get("task")), mode, epsilon))
    if spread is None:
        return []
    mean, sd = spread
    defaults = defaults if defaults is not None else _default_settings()
    differ = [f"{key}={config.get(key)!r} (default {defaults[key]!r})" for key in SPREAD_SETTINGS
              if key in defaults and config.get(key) != defaults[key]]
    setting = "no DP" if epsilon is None else f"patient-level DP at epsilon {epsilon:g}"
    lines = ["## Spread across seeds", "",
             f"The README's 5-seed table (seeds 0-4, defaults otherwise) gives a final "
             f"client-average accuracy of {mean:.3f} \u00b1 {sd:.3f} (mean \u00b1 standard "
             f"deviation) for {config.get('task')} with {setting}: one seed's result can lie "
             f"a few hundredths from the mean."]
    achieved = _value(final, "client_avg_accuracy")
    gap = README_REPORTED_GAP.get((str(config.get("task")), mode, epsilon))
    if differ:
        lines[-1] += (" This run differs from those settings in " + ", ".join(differ)
                      + ", so the figure does not apply directly.")
    elif gap is not None and math.isfinite(achieved):
        lines[-1] += (" That figure is exact (each hospital's own metrics of the final model, "
                      "kept beside its ledger); this report shows the DP evaluation, which "
                      f"differed from it by {gap:.3f} on average over those seeds. This run "
                      f"(seed {config.get('seed')}): {achieved:.3f}"
                      f"{_interval(final, 'client_avg_accuracy')} reported.")
    elif math.isfinite(achieved):
        lines[-1] += (f" This run (seed {config.get('seed')}): {achieved:.3f}, "
                      f"{(achieved - mean) / sd:+.1f} standard deviations from the mean.")
    return [*lines, ""]


def _average_cell(final: dict[str, str], metric: str, total: int) -> str:
    """A client average for the table, with how many hospitals it covers when not all."""
    value = _value(final, f"client_avg_{metric}")
    covered = _value(final, f"client_avg_{metric}_hospitals")
    text = f"{value:.4f}" if math.isfinite(value) else "n/a"
    if math.isfinite(covered) and int(covered) != total:
        text += f" (over {int(covered)} of {total} hospitals)"
    return text


def _interval(final: dict[str, str], column: str) -> str:
    """`` (95% interval low-high)`` from metrics.csv's ``<column>_low/_high``; '' if none."""
    low, high = _value(final, f"{column}_low"), _value(final, f"{column}_high")
    return f" ({low:.3f}\u2013{high:.3f})" if math.isfinite(low) and math.isfinite(high) else ""


def final_table(final: dict[str, str], task: TaskSpec, total: int) -> list[str]:
    """The final round's pooled and client-average metrics; a DP evaluation's with their 95%
    intervals and what they cover.
    """
    dp = any(math.isfinite(_value(final, f"pooled_{m}_low")) for m in task.metric_names)
    lines = ["| metric | pooled | client avg |", "|---|---|---|"]
    if not dp:
        lines.append(f"| loss | {_value(final, 'pooled_loss'):.4f} | |")
    lines += [f"| {m} | {_value(final, f'pooled_{m}'):.4f}{_interval(final, f'pooled_{m}')} | "
              f"{_average_cell(final, m, total)}{_interval(final, f'client_avg_{m}')} |"
              for m in task.metric_names]
    if dp:
        lines += ["", "Evaluated under DP: each hospital released its test rows' correct and "
                  "incorrect counts and a 4-bin score histogram per label once, noised and "
                  "charged on its ledger's test track; the server summed the releases (pooled) "
                  "and averaged each hospital's own (client avg). In brackets: 95% intervals "
                  "for the DP noise (parametric bootstrap over the known noise stddev); the "
                  "exact metrics stay in each hospital's own metrics file beside its ledger."]
    return lines


def median(values: list[float]) -> float:
    """The median of the finite `values` (mean of the two middle ones for an even count);
    NaN if there is none.
    """
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


LOWER_IS_BETTER = frozenset({"loss", "mae"})


def headline_lines(final: dict[str, str], task: TaskSpec, hospitals: list[str],
                   config: dict[str, object], declined_every_round: list[str]) -> list[str]:
    """The report's first lines: what may leave, and only that.

    The client average and the pooled figure of each metric (under DP: the released
    estimates with their 95% intervals), the worst hospital by its own released figure (a
    per-hospital DP release in the clear path; not available under secure aggregation, where
    the server sees sums only), and the hospitals that declined every round.
    """
    dp = str(config.get("dp_mode", "none")) != "none"
    kind = "DP estimate" if dp else "exact, as the hospitals sent them (no DP)"
    lines = [f"**Headline** ({kind}; client average = unweighted mean over hospitals):", ""]
    for metric in task.metric_names:
        label = _label(metric)
        cell = (f"- {label}: client average {_value(final, f'client_avg_{metric}'):.3f}"
                f"{_interval(final, f'client_avg_{metric}')}, pooled "
                f"{_value(final, f'pooled_{metric}'):.3f}{_interval(final, f'pooled_{metric}')}")
        lines.append(cell + "; " + _worst_hospital(final, metric, hospitals, config) + ".")
    declined = ", ".join(declined_every_round) if declined_every_round else "none"
    lines += [f"- Declined every round: {declined}.", ""]
    return lines


def _worst_hospital(final: dict[str, str], metric: str, hospitals: list[str],
                    config: dict[str, object]) -> str:
    """``worst hospital NAME (value)`` from each hospital's released figure, or why not."""
    if config.get("secagg_enabled"):
        return ("worst hospital: not available (secure aggregation: the server sees only the "
                "sum of the hospitals' releases)")
    values = {h: _value(final, f"{h}_{metric}") for h in hospitals}
    finite = {h: v for h, v in values.items() if math.isfinite(v)}
    if not finite:
        return "worst hospital: not available (no hospital released this metric)"
    pick = max if metric in LOWER_IS_BETTER else min
    name = pick(finite, key=lambda h: finite[h])
    own = " (its own DP release, noise included)" if config.get("dp_mode") != "none" else ""
    return f"worst hospital {name} {finite[name]:.3f}{own}"


def write_report(run_dir: Path, *, task: TaskSpec, hospitals: list[str], config: dict[str, object],
                 epsilon: dict[str, dict[str, float]] | None = None, stop_reason: str = "",
                 aborted_rounds: list[str] | None = None,
                 trust: SecureTrust | None = None,
                 declined_every_round: list[str] | None = None) -> Path:
    """Write report.md and its plots from the run directory's metrics.csv; return its path.

    ``trust``: a secure run's t, c, h and distributed z, for the privacy statement;
    ``declined_every_round``: the hospitals that declined every round the run filed.
    """
    rows = _read_rows(run_dir / "metrics.csv")
    lines = [f"# fedcare run: {task.name}", ""]
    if stop_reason:
        lines += [f"**The run stopped early**: {stop_reason}", ""]
    if aborted_rounds:
        lines += ["**Secure aggregation aborted these rounds** (nothing of them was averaged in; "
                  "the global model stayed as it was; the hospitals' charges for them stand):",
                  "", *[f"- {why}" for why in aborted_rounds], ""]
    if not rows:
        lines += ["No round completed.", ""]
        (run_dir / "report.md").write_text("\n".join(lines))
        return run_dir / "report.md"
    title = plot_title(task, config, epsilon)
    final = rows[-1]
    lines += headline_lines(final, task, hospitals, config, declined_every_round or [])
    save_figure(metrics_vs_round_figure(rows, task, hospitals, title),
                run_dir / "metrics_vs_round.png")
    save_figure(hospital_bars_figure(final, task, hospitals, title),
                run_dir / "hospital_metrics.png")
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
        *final_table(final, task, len(hospitals)),
    ]
    lines += [
        "",
        "\"pooled\" is the metric on the union of all hospitals' test sets; \"client avg\" the "
        "unweighted mean of each hospital's metric on its own test set (FLamby's metric), over "
        "the hospitals where it is defined (an AUC needs both classes in the test set); "
        "metrics.csv's `client_avg_<metric>_hospitals` counts them.",
        "",
        *expected_spread(config, final),
        "## Metrics vs round",
        "",
        "![metrics vs round](metrics_vs_round.png)",
        "",
        "Dotted lines: chance level (AUC 0.5; accuracy: the majority-class rate of the test "
        "set, i.e. always predicting its most frequent class).",
        "",
        "## Per hospital",
        "",
        "![per-hospital metrics](hospital_metrics.png)",
        "",
        "n is each hospital's test-set size: with n rows its accuracy moves in steps of 1/n. "
        "A hatched \"n/a\" bar is a metric undefined on that test set, left out of the client "
        "average.",
        "",
        f"Round seconds: first {_value(rows[0], 'seconds'):.2f} s (includes start-up), "
        f"median of the rest {median(_values(rows[1:], 'seconds')):.3f} s.",
        "",
    ]
    lines += privacy_statement(config, epsilon or {}, trust, rounds=len(rows))
    if config.get("dp_mode") != "none":
        save_figure(epsilon_figure(rows, hospitals, config, epsilon, title),
                    run_dir / "epsilon_vs_round.png")
        lines += ["![epsilon vs round](epsilon_vs_round.png)", ""]
    from server.report_explanation import explanation_section

    lines += explanation_section(run_dir)
    (run_dir / "report.md").write_text("\n".join(lines))
    return run_dir / "report.md"
