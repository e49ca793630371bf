"""Evaluation statistics as they travel: the keys, shapes and ranges each task kind allows.

Without DP a hospital reduces its test predictions to exact sums (``common.metrics``); under
DP it sends one noised release of them (``common.dp.evaluation_release``: counts and a few
score bins per label, its noise stddev beside them), charged on its ledger's test track. The
server adds them up across hospitals. A malformed set (a missing key, a wrong shape, a
negative count, a histogram that does not add up to the count, a non-finite value) would crash
that sum or bias the pooled metric, so it is refused here, naming the statistic. Noised values
may be negative or fractional: only their shapes and finiteness are checked.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from common.dp.evaluation_release import EVALUATION_BINS, REGRESSION_PARTS
from common.metrics import AUC_BINS
from common.wire.fields import WireFormatError

MAX_COUNT = 1e9  # test rows a hospital may report
_CLASSIFICATION = ("count", "loss_sum", "correct", "score_hist")
_REGRESSION = ("count", "loss_sum", "abs_err_sum", "sq_err_sum", "y_sum", "y_sq_sum")
_MAY_BE_NEGATIVE = ("y_sum",)
NOISE_STDDEV = "noise_stddev"  # a DP release's per-cell noise stddev (data-independent)


@dataclass(frozen=True, slots=True)
class StatisticsSpec:
    """What a task's statistics look like: its kind, score histogram columns, exact or DP.

    ``private``: a DP release (``common.dp.evaluation_release``, ``EVALUATION_BINS`` bins, its
    ``noise_stddev``) instead of the exact sums (``AUC_BINS`` bins, a loss sum).
    """

    kind: str  # "binary", "multiclass" or "regression"
    columns: int  # 1 for binary; the class count for multiclass; unused for regression
    private: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        """The statistics' names."""
        return tuple(self.shapes)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each statistic's shape."""
        if self.private:
            release: dict[str, tuple[int, ...]] = (
                {"sums": (REGRESSION_PARTS,)} if self.kind == "regression"
                else {"outcome": (2,), "score_hist": (self.columns, 2, EVALUATION_BINS)})
            return {**release, NOISE_STDDEV: ()}
        keys = _REGRESSION if self.kind == "regression" else _CLASSIFICATION
        return {key: (self.columns, 2, AUC_BINS) if key == "score_hist" else ()
                for key in keys}


def validate_statistics(raw: Mapping[str, np.ndarray], spec: StatisticsSpec,
                        field: str = "statistics") -> dict[str, np.ndarray]:
    """Return the statistics as float64 arrays, or raise WireFormatError naming the bad one."""
    if set(raw) != set(spec.keys):
        missing, extra = sorted(set(spec.keys) - set(raw)), sorted(set(raw) - set(spec.keys))
        raise WireFormatError(field, f"missing {missing}" if missing else f"unexpected {extra}")
    out: dict[str, np.ndarray] = {}
    for key in spec.keys:
        name = f"{field}.{key}"
        try:
            value = np.asarray(raw[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise WireFormatError(name, "is not numeric") from None
        shape = spec.shapes[key]
        if value.shape != shape:
            raise WireFormatError(name, f"has shape {value.shape}, expected {shape}")
        if not np.all(np.isfinite(value)):
            raise WireFormatError(name, "has non-finite values")
        if (key not in _MAY_BE_NEGATIVE and (not spec.private or key == NOISE_STDDEV)
                and np.any(value < 0)):
            raise WireFormatError(name, "has negative values")
        out[key] = value
    if spec.private:
        if not float(out[NOISE_STDDEV]) > 0:
            raise WireFormatError(f"{field}.{NOISE_STDDEV}", "must be > 0 (a DP release)")
        return out
    count = float(out["count"])
    if not 1 <= count <= MAX_COUNT or not count.is_integer():
        raise WireFormatError(f"{field}.count", f"must be a whole number in [1, {MAX_COUNT:g}], "
                              f"got {count!r}")
    if "correct" in out and not float(out["correct"]) <= count:
        raise WireFormatError(f"{field}.correct", "exceeds the count")
    if "score_hist" in out and not np.allclose(out["score_hist"].sum(axis=(1, 2)), count):
        raise WireFormatError(f"{field}.score_hist", "does not add up to the count")
    return out
