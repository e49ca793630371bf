"""The ROC plot: log-log axes, the DP bound, labels, and a PNG on disk."""

import numpy as np
import pytest
from matplotlib.image import imread

from simulations.audit.membership import dp_tpr_bound
from simulations.audit.plots import roc_figure, save_roc_plot


def _curves():
    rng = np.random.default_rng(0)
    return {
        "loss threshold": (rng.normal(0.5, 1, 300), rng.normal(0, 1, 400)),
        "LiRA online": (rng.normal(2, 1, 300), rng.normal(0, 1, 400)),
    }


def test_figure_has_log_axes_labels_bound_and_legend():
    fig = roc_figure(_curves(), eps=1.0, delta=1e-5, title="heart-disease, eps 1")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "False positive rate" and ax.get_ylabel() == "True positive rate"
    assert ax.get_title() == "heart-disease, eps 1"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0].startswith("loss threshold (AUC ") and labels[1].startswith("LiRA online")
    bound = next(line for line in ax.get_lines() if line.get_label().startswith("DP bound"))
    x, y = bound.get_data()
    np.testing.assert_allclose(y, np.maximum(dp_tpr_bound(x, 1.0, 1e-5), x.min()))
    assert ax.get_xlim()[0] == pytest.approx(0.5 / 400)
    assert len(ax.get_legend().get_texts()) == 4


def test_non_private_run_draws_no_bound():
    fig = roc_figure(_curves(), eps=None, delta=1e-5, title="control")
    assert not any(line.get_label().startswith("DP bound") for line in fig.axes[0].get_lines())


def test_writes_a_png(tmp_path):
    path = save_roc_plot(tmp_path / "roc.png", _curves(), 1.0, 1e-5, "t", dpi=100)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[:2] == (500, 550)
    assert image[..., :3].std() > 0.05  # something was drawn


def test_no_curves_is_refused():
    with pytest.raises(ValueError):
        roc_figure({}, 1.0, 1e-5, "t")
