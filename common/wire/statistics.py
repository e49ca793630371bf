"""Evaluation statistics as they travel: the keys, shapes and ranges each task kind allows.

A hospital reduces its test predictions to sums (``common.metrics``); the server adds them up
across hospitals. A malformed set (a missing key, a wrong shape, a negative count, a histogram
that does not add up to the count) would crash that sum or bias the pooled metric, so it is
refused here, naming the statistic.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from common.metrics import AUC_BINS
from common.wire.fields import WireFormatError

MAX_COUNT = 1e9  # test rows a hospital may report
_CLASSIFICATION = ("count", "loss_sum", "correct", "score_hist")
_REGRESSION = ("count", "loss_sum", "abs_err_sum", "sq_err_sum", "y_sum", "y_sq_sum")
_MAY_BE_NEGATIVE = ("y_sum",)


@dataclass(frozen=True, slots=True)
class StatisticsSpec:
    """What a task's statistics look like: its kind and its score histogram's columns."""

    kind: str  # "binary", "multiclass" or "regression"
    columns: int  # 1 for binary; the class count for multiclass; unused for regression

    @property
    def keys(self) -> tuple[str, ...]:
        """The statistics' names."""
        return _REGRESSION if self.kind == "regression" else _CLASSIFICATION

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each statistic's shape."""
        return {key: (self.columns, 2, AUC_BINS) if key == "score_hist" else ()
                for key in self.keys}


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
        if key not in _MAY_BE_NEGATIVE and np.any(value < 0):
            raise WireFormatError(name, "has negative values")
        out[key] = value
    count = float(out["count"])
    if not 1 <= count <= MAX_COUNT or not count.is_integer():
        raise WireFormatError(f"{field}.count", f"must be a whole number in [1, {MAX_COUNT:g}], "
                              f"got {count!r}")
    if "correct" in out and not float(out["correct"]) <= count:
        raise WireFormatError(f"{field}.correct", "exceeds the count")
    if "score_hist" in out and not np.allclose(out["score_hist"].sum(axis=(1, 2)), count):
        raise WireFormatError(f"{field}.score_hist", "does not add up to the count")
    return out
