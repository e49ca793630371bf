"""ROC plot of membership-inference attacks with the (epsilon, delta)-DP bound drawn in.

Log-log axes, as Carlini et al., "Membership Inference Attacks From First Principles" (IEEE S&P
2022, Sec. III) recommend for the low-FPR regime; the bound is TPR <= min(1, e^eps FPR + delta,
1 - e^-eps (1 - delta - FPR)) (see ``simulations.audit.membership.dp_tpr_bound``). Drawn with
matplotlib's Agg canvas on a standalone Figure: no display, no pyplot global state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulations.audit.membership import dp_tpr_bound, roc, roc_auc

__all__ = ["roc_figure", "save_roc_plot"]


def roc_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    eps: float | None,
    delta: float,
    title: str,
) -> Figure:
    """Draw ROC curves on log-log axes with the bound an (eps, delta)-DP run implies.

    Parameters
    ----------
    curves : mapping of str to (member_scores, nonmember_scores)
        One entry per attack (label -> 1-D score arrays, higher meaning "member").
    eps : float or None
        The run's accounted epsilon; ``None`` for a non-private run (no bound drawn).
    delta : float
        The run's delta.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: every curve labelled with its AUC, the chance diagonal, and the bound.
        Rates of 0, which log axes cannot show, are drawn at half the smallest resolvable
        rate (``1 / (2 n)``, n the number of non-members or members).
    """
    if not curves:
        raise ValueError("need at least one ROC curve")
    fig = Figure(figsize=(5.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    floor = 1.0
    for label, (members, nonmembers) in curves.items():
        fpr, tpr = roc(members, nonmembers)
        x_floor = 0.5 / np.size(nonmembers)
        y_floor = 0.5 / np.size(members)
        floor = min(floor, x_floor)
        auc = roc_auc(members, nonmembers)
        ax.plot(
            np.maximum(fpr, x_floor),
            np.maximum(tpr, y_floor),
            drawstyle="steps-post",
            label=f"{label} (AUC {auc:.3f})",
        )
    grid = np.logspace(np.log10(floor), 0, 400)
    ax.plot(grid, grid, color="grey", linestyle=":", linewidth=1, label="chance")
    if eps is not None:
        ax.plot(
            grid,
            np.maximum(dp_tpr_bound(grid, eps, delta), floor),
            color="black",
            linestyle="--",
            label=f"DP bound (eps={eps:g}, delta={delta:g})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def save_roc_plot(
    path: str | Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    eps: float | None,
    delta: float,
    title: str,
    dpi: int = 120,
) -> Path:
    """Write :func:`roc_figure`'s plot to ``path`` as a PNG.

    Parameters
    ----------
    path : str or pathlib.Path
        Output file; its directory must exist. Overwritten if present.
    curves, eps, delta, title
        As for :func:`roc_figure`.
    dpi : int, default 120
        Resolution (a 5.5 x 5 inch figure: 660 x 600 pixels at 120 dpi).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    fig = roc_figure(curves, eps, delta, title)
    fig.savefig(path, format="png", dpi=dpi)
    return path
