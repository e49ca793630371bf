"""Per-hospital preprocessing: z-scoring with a hospital's own training statistics only."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Standardizer:
    """Feature-wise z-scoring fitted on one hospital's training rows.

    A feature that is constant in the training rows (e.g. Switzerland's ``chol``, which is
    always 0 there, meaning missing) keeps scale 1, so it maps to 0 instead of NaN.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x_train: np.ndarray) -> "Standardizer":
        """Fit on training rows, shape (rows, features); std with ddof=0."""
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        return cls(mean=mean, scale=np.where(std > 0, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return (x - mean) / scale as float32."""
        return np.asarray((x - self.mean) / self.scale, dtype=np.float32)
