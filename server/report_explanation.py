"""The report's consortium-explanation section: the importance plot, what it cost, its limits.

Reads ``explanation.json`` (``server.explanation``) from the run directory and returns the
markdown lines; draws ``explanation.png``: the consortium's mean absolute attribution per
feature (in the explained output's units: logits for the classification tasks), most
important first, with 95% intervals from the DP noise.
"""

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

EXPLANATION_FILE = "explanation.json"
PLOT_FILE = "explanation.png"
TOP_SHOWN = 20  # features drawn at most


def _plot(document: dict[str, Any], path: Path) -> None:
    importance = np.asarray(document["importance"])
    low, high = np.asarray(document["low"]), np.asarray(document["high"])
    order = np.argsort(-importance, kind="stable")[:TOP_SHOWN]
    names = [document["features"][j] for j in order]
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(order) + 1.4))
    y = np.arange(len(order))[::-1]
    ax.barh(y, importance[order], color="tab:blue")
    ax.errorbar(importance[order], y, xerr=[importance[order] - low[order],
                                            high[order] - importance[order]],
                fmt="none", ecolor="black", capsize=3, lw=1, label="95% interval (DP noise)")
    ax.set_yticks(y, names)
    ax.set_xlabel("mean |attribution| per training row (logit units)")
    ax.set_title("Consortium feature importance (DP release)")
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def explanation_section(run_dir: Path) -> list[str]:
    """The section's markdown lines (empty when the run asked for no explanation)."""
    path = run_dir / EXPLANATION_FILE
    if not path.is_file():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return ["## Consortium explanation", "", f"Unreadable {EXPLANATION_FILE}: {error}", ""]
    lines = ["## Consortium explanation (DP)", "",
             f"Once after training, each hospital released the sum of its training rows' "
             f"absolute attributions under the final model (each row's vector clipped to L2 "
             f"{document['bound']:g} logits) and its row count, with Gaussian noise (noise "
             f"multiplier {document['noise_multiplier']:.3g}, stddev "
             f"{document['stddev']:.3g} per cell for a hospital with the run's budget), "
             f"charged on its training track at patient level. Priced alone at "
             f"{document['share']:g} x its budget epsilon "
             f"({document['share'] * document['budget_epsilon']:.3g} at delta "
             f"{document['delta']:g}); composed with training by Opacus's accountant on each "
             "ledger, every hospital stays within its budget.", ""]
    spent = document.get("epsilon_after", {})
    if spent:
        lines += [f"- {name}: training-track epsilon {value:.3f} after the explanation"
                  if math.isfinite(value) else f"- {name}: training-track epsilon +inf"
                  for name, value in sorted(spent.items())]
        lines.append("")
    for name, reason in sorted(document.get("declined", {}).items()):
        lines.append(f"- {name} declined: {reason}")
    for name, reason in sorted(document.get("rejected", {}).items()):
        lines.append(f"- {name}'s reply was rejected: {reason}")
    if "importance" not in document:
        return [*lines, "", "No hospital released an explanation.", ""]
    _plot(document, run_dir / PLOT_FILE)
    lines += ["", f"![consortium feature importance]({PLOT_FILE})", "",
              f"Importance = sum of the released sums / sum of the released counts "
              f"(about {document['count']:.0f} rows from {len(document['released'])} "
              "hospital(s)). What it does not cover: the intervals are the DP noise's alone "
              "(not the sampling of patients, nor the clipping's bias: a row whose "
              "attributions exceed the bound counts at the bound); it explains the final "
              "global model, not the personal models; attributions are against the public "
              "baseline (the shared normalisation's centers), so a feature's importance "
              "depends on that choice; and an importance is an association in the model, "
              "not a cause.", ""]
    return lines
