"""The run report's plots and text: n/a for undefined metrics, coverage, chance, budgets, median.

Figures are inspected through their matplotlib artists (bars, lines, texts, labels), not only
written: what a reader sees is asserted.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from common.metrics import evaluation_statistics
from server.evaluation import epsilon_columns, summarize_round
from server.report import (
    README_SPREAD,
    epsilon_figure,
    expected_spread,
    hospital_bars_figure,
    median,
    metrics_vs_round_figure,
    plot_title,
    write_report,
)
from server.run_directory import MetricsWriter, metrics_columns

HOSPITALS = ["cleveland", "hungary", "switzerland", "va"]


@dataclass(frozen=True)
class FakeTask:
    """The fields the report and the evaluation read (name, kind, metric names)."""

    name: str = "heart-disease"
    kind: str = "binary"
    metric_names: tuple[str, ...] = ("accuracy", "auc")


TASK = FakeTask()
CONFIG = {"task": "heart-disease", "dp_mode": "patient", "dp_epsilon": 1.0, "dp_delta": 1e-5,
          "seed": 0, "server_optimizer": "fedavg", "dp_accountant": "rdp"}


def _statistics(seed: int, n: int, *, one_class: bool = False):
    rng = np.random.default_rng(seed)
    y = np.ones(n) if one_class else rng.integers(0, 2, n).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    return evaluation_statistics("binary", y, p)


def _round_row(round_number: int, seconds: float = 1.0) -> dict:
    """A metrics.csv row in which switzerland's 16-row test set has one class only."""
    stats = {"cleveland": _statistics(1, 60), "hungary": _statistics(2, 58),
             "switzerland": _statistics(3, 16, one_class=True), "va": _statistics(4, 40)}
    row = {"round": round_number, "seconds": seconds, "participants": 4, "declined": 0,
           "rejected": 0, "epsilon_patient_max": 0.4 * round_number, "epsilon_hospital_max": 0.0}
    row.update(summarize_round(TASK, stats))
    row.update({f"epsilon_{h}": 0.1 * (i + 1) * round_number for i, h in enumerate(HOSPITALS)})
    return row


def _write_metrics(path: Path, seconds: list[float]) -> list[dict[str, str]]:
    writer = MetricsWriter(path, metrics_columns(TASK.metric_names, HOSPITALS))
    for index, value in enumerate(seconds, start=1):
        writer.append(_round_row(index, value))
    return writer.rows


def _axes_by_title(fig, word: str):
    (ax,) = [a for a in fig.axes if word in a.get_title()]
    return ax


def _epsilon(budget: float = 1.0) -> dict[str, dict[str, float]]:
    return {h: {"patient": 0.2 * (i + 1), "hospital": 0.0, "budget_epsilon": budget,
                "budget_delta": 1e-5} for i, h in enumerate(HOSPITALS)}


# --- coverage: summarize_round and metrics.csv --------------------------------------------


def test_client_average_covers_only_finite_values_and_says_how_many(tmp_path):
    row = _round_row(1)
    finite = [row[f"{h}_auc"] for h in ("cleveland", "hungary", "va")]
    assert math.isnan(row["switzerland_auc"])
    assert row["client_avg_auc"] == pytest.approx(np.mean(finite))
    assert row["client_avg_auc_hospitals"] == 3
    assert row["client_avg_accuracy_hospitals"] == 4
    assert [row[f"test_rows_{h}"] for h in HOSPITALS] == [60, 58, 16, 40]
    assert row["majority_rate_switzerland"] == 1.0  # one class: always right by guessing it


def test_metrics_csv_has_the_coverage_column_next_to_the_average(tmp_path):
    rows = _write_metrics(tmp_path / "metrics.csv", [2.0])
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    at = header.index("client_avg_auc")
    assert header[at + 1] == "client_avg_auc_hospitals"
    assert header[:4] == ["round", "seconds", "participants", "pooled_loss"]
    assert rows[0]["client_avg_auc_hospitals"] == "3"
    assert rows[0]["client_avg_accuracy_hospitals"] == "4"
    assert rows[0]["test_rows_switzerland"] == "16"


def test_epsilon_columns_keep_an_unbounded_epsilon():
    spent = {"a": {"patient": 0.5, "hospital": 0.0}, "b": {"patient": math.inf, "hospital": 0.0}}
    assert epsilon_columns(spent, "patient") == {"epsilon_a": 0.5, "epsilon_b": math.inf}
    assert epsilon_columns(spent, "none") == {}


# --- the per-hospital plot ------------------------------------------------------------------


def test_nan_auc_hospital_is_a_hatched_labelled_na_bar_not_an_empty_slot(tmp_path):
    final = _write_metrics(tmp_path / "metrics.csv", [1.0])[-1]
    fig = hospital_bars_figure(final, TASK, HOSPITALS, "t")
    ax = _axes_by_title(fig, "AUC")
    swiss = HOSPITALS.index("switzerland")

    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    (na_bar,) = hatched
    assert na_bar.get_x() + na_bar.get_width() / 2 == pytest.approx(swiss)
    low, high = ax.get_ylim()
    assert na_bar.get_height() == pytest.approx(high - low)  # full height: never reads as 0
    na_texts = [t for t in ax.texts if t.get_text() == "n/a"]
    assert [t.get_position()[0] for t in na_texts] == [swiss]
    filled = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_hatch()]
    centres = sorted(round(p.get_x() + p.get_width() / 2) for p in filled)
    assert centres == [0, 1, 3]  # the three hospitals with an AUC
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.startswith("n/a") for label in labels)
    assert any("client avg" in label and "3/4 hospitals" in label for label in labels)


def test_per_hospital_plot_shows_test_set_sizes_axis_labels_and_chance(tmp_path):
    final = _write_metrics(tmp_path / "metrics.csv", [1.0])[-1]
    fig = hospital_bars_figure(final, TASK, HOSPITALS, "heart-disease: DP patient")

    accuracy, auc = _axes_by_title(fig, "accuracy"), _axes_by_title(fig, "AUC")
    ticks = [t.get_text() for t in accuracy.get_xticklabels()]
    assert ticks == ["cleveland\nn=60", "hungary\nn=58", "switzerland\nn=16", "va\nn=40"]
    for ax in (accuracy, auc):
        assert ax.get_xlabel() and ax.get_ylabel()
    auc_chance = [line for line in auc.get_lines() if "chance" in line.get_label()]
    assert auc_chance and all(np.allclose(line.get_ydata(), 0.5) for line in auc_chance)
    # accuracy's chance level is each hospital's own majority-class rate (switzerland: 1.0)
    labels = accuracy.get_legend_handles_labels()[1]
    assert any("majority-class rate" in label for label in labels)
    (segments,) = [c for c in accuracy.collections if "majority" in c.get_label()]
    heights = sorted(seg[0][1] for seg in segments.get_segments())
    assert heights[-1] == pytest.approx(1.0)
    assert fig.texts[0].get_text() == "heart-disease: DP patient"  # the suptitle


# --- metrics vs round and epsilon ---------------------------------------------------------


def test_metrics_vs_round_labels_axes_says_coverage_and_draws_chance(tmp_path):
    rows = _write_metrics(tmp_path / "metrics.csv", [3.0, 1.0])
    fig = metrics_vs_round_figure(rows, TASK, HOSPITALS, "title")
    assert all(ax.get_xlabel() == "round" and ax.get_ylabel() for ax in fig.axes)
    auc = _axes_by_title(fig, "AUC")
    labels = [line.get_label() for line in auc.get_lines()]
    assert "client avg (over 3/4 hospitals)" in labels
    assert "chance (AUC 0.5)" in labels
    accuracy = _axes_by_title(fig, "accuracy")
    rate = float(rows[-1]["majority_rate_pooled"])
    (chance,) = [line for line in accuracy.get_lines() if "majority" in line.get_label()]
    assert np.allclose(chance.get_ydata(), rate)
    assert "client avg" in [line.get_label() for line in accuracy.get_lines()]  # all 4: no note


def test_epsilon_plot_has_a_curve_per_hospital_and_the_budget_line(tmp_path):
    rows = _write_metrics(tmp_path / "metrics.csv", [3.0, 1.0])
    fig = epsilon_figure(rows, HOSPITALS, CONFIG, _epsilon(1.0), "t")
    (ax,) = fig.axes
    curves = {line.get_label(): line for line in ax.get_lines() if line.get_marker() == "o"}
    assert len(curves) == len(HOSPITALS)
    assert set(curves) == set(HOSPITALS)
    assert list(curves["va"].get_ydata()) == pytest.approx([0.4, 0.8])
    (budget,) = [line for line in ax.get_lines() if "budget" in line.get_label()]
    assert np.allclose(budget.get_ydata(), 1.0) and "1" in budget.get_label()
    assert ax.get_xlabel() == "round" and "spent" in ax.get_ylabel()


def test_unbounded_epsilon_and_budget_are_labelled_as_such(tmp_path):
    rows = _write_metrics(tmp_path / "metrics.csv", [3.0, 1.0])
    rows[-1]["epsilon_va"] = "inf"
    fig = epsilon_figure(rows, HOSPITALS, CONFIG, _epsilon(math.inf), "t")
    (ax,) = fig.axes
    labels = ax.get_legend_handles_labels()[1]
    assert any("unbounded" in label and "+inf" in label for label in labels)
    assert "+inf" in [t.get_text() for t in ax.texts]
    (va,) = [line for line in ax.get_lines() if line.get_label() == "va"]
    assert math.isnan(va.get_ydata()[-1])  # not drawn as a finite value
    assert any(line.get_label() == "va: \u03b5 +inf (unbounded)" for line in ax.get_lines())
    assert all(math.isfinite(limit) for limit in ax.get_ylim())


def test_epsilon_plot_without_per_hospital_columns_says_it_shows_the_max(tmp_path):
    rows = [{k: v for k, v in row.items() if not k.startswith("epsilon_") or k.endswith("_max")}
            for row in _write_metrics(tmp_path / "metrics.csv", [3.0, 1.0])]
    fig = epsilon_figure(rows, HOSPITALS, CONFIG, _epsilon(1.0), "t")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any(label.startswith("max over hospitals") for label in labels)


def test_title_names_task_dp_level_and_epsilon():
    title = plot_title(TASK, CONFIG, _epsilon(1.0))
    assert "heart-disease" in title and "patient" in title and "\u03b5 1" in title
    assert "0.8" in title  # the most any hospital spent
    assert "no differential privacy" in plot_title(TASK, {"dp_mode": "none"})


# --- the report's text --------------------------------------------------------------------


def test_median_of_an_even_count_is_the_mean_of_the_two_middle_values():
    assert median([10.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert math.isnan(median([]))


def test_report_states_the_true_median_coverage_and_the_plots(tmp_path):
    _write_metrics(tmp_path / "metrics.csv", [9.0, 1.0, 2.0, 3.0, 10.0])
    text = write_report(tmp_path, task=TASK, hospitals=HOSPITALS, config=CONFIG,
                        epsilon=_epsilon()).read_text()
    assert "median of the rest 2.500 s" in text
    assert "(over 3 of 4 hospitals)" in text
    for png in ("metrics_vs_round.png", "hospital_metrics.png", "epsilon_vs_round.png"):
        assert (tmp_path / png).stat().st_size > 0 and f"]({png})" in text


DEFAULTS = {"num_server_rounds": 20, "hospitals": 4, "learning_rate": 0.1}


def test_the_spread_the_report_quotes_is_the_readmes():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for mean, sd in README_SPREAD.values():
        assert f"{mean:.3f} \u00b1 {sd:.3f}" in readme


def test_expected_spread_quotes_the_readme_table_for_the_default_settings():
    mean, sd = README_SPREAD[("heart-disease", "patient", 1.0)]
    final = {"client_avg_accuracy": f"{mean - 2 * sd:.4f}", "client_avg_accuracy_low": "0.7",
             "client_avg_accuracy_high": "0.9"}
    text = " ".join(expected_spread({**CONFIG, **DEFAULTS}, final, DEFAULTS))
    assert "README" in text and f"{mean:.3f} \u00b1 {sd:.3f}" in text
    # Under DP the report's figure is the DP evaluation: said so, with its interval.
    assert "That figure is exact" in text and "(0.700\u20130.900) reported" in text
    none_mean, none_sd = README_SPREAD[("heart-disease", "none", None)]
    none_final = {"client_avg_accuracy": f"{none_mean - 2 * none_sd:.4f}"}
    none = " ".join(expected_spread({**CONFIG, **DEFAULTS, "dp_mode": "none"}, none_final,
                                    DEFAULTS))
    assert f"{none_mean:.3f} \u00b1 {none_sd:.3f}" in none
    assert "-2.0 standard deviations" in none


def test_expected_spread_says_when_the_table_does_not_apply():
    short = {**CONFIG, **DEFAULTS, "num_server_rounds": 2}
    text = " ".join(expected_spread(short, {"client_avg_accuracy": "0.45"}, DEFAULTS))
    mean = README_SPREAD[("heart-disease", "patient", 1.0)][0]
    assert f"{mean:.3f}" in text and "num_server_rounds=2" in text and "does not apply" in text
    assert expected_spread({**CONFIG, "task": "digits"}, {}, DEFAULTS) == []
    assert expected_spread({**CONFIG, "dp_epsilon": 3.0}, {}, DEFAULTS) == []


def test_every_figure_line_has_a_label_for_its_legend(tmp_path):
    rows = _write_metrics(tmp_path / "metrics.csv", [3.0, 1.0])
    for fig in (metrics_vs_round_figure(rows, TASK, HOSPITALS, "t"),
                epsilon_figure(rows, HOSPITALS, CONFIG, _epsilon(), "t")):
        for ax in fig.axes:
            assert all(not line.get_label().startswith("_") for line in ax.get_lines()
                       if isinstance(line, Line2D))
