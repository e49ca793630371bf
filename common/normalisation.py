"""Shared normalisation: every hospital scales its features with the same public constants.

A task or schema declares, per model input column, an affine map x' = (x - center) / scale
from public facts only (the schema's value ranges, or published reference values): no
hospital's data shapes it, so it costs no epsilon and every release stays within the unit of
privacy. Hospitals keep the between-hospital shifts the model needs (a hospital whose patients
are older keeps larger ages). Every hospital computes the constants' digest from its own copy
of the task or schema and declines a run whose server states another (``digest``).

Missing values get an explicit indicator column (1 where the value is missing) and the
center as value (0 after scaling), instead of a magic number passed through as data
(heart-disease's ``chol = 0`` at Switzerland and VA means "not measured").

Per-hospital z-scoring (``Standardizer``, fitted on the hospital's own training rows) remains a
setting: its statistics never leave the hospital, but every release depends on them, so it is
listed as not covered by the guarantee when chosen.
"""

import hashlib
import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class PublicScaling:
    """Public per-column constants: x' = (x - center) / scale (scale > 0).

    Attributes
    ----------
    names : tuple of str
        The model input columns, in order.
    center, scale : tuple of float
        Per column; the same length as ``names``.
    source : str
        Where the constants come from (e.g. "schema ranges", "clinical reference values").
    """

    names: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        """Check the lengths and that every scale is a finite number > 0."""
        if not len(self.names) == len(self.center) == len(self.scale):
            raise ValueError(f"names, center and scale must have one entry per column, got "
                             f"{len(self.names)}, {len(self.center)}, {len(self.scale)}")
        bad = [n for n, c, s in zip(self.names, self.center, self.scale, strict=True)
               if not (np.isfinite(c) and np.isfinite(s) and s > 0)]
        if bad:
            raise ValueError(f"columns {bad}: center must be finite and scale finite and > 0")

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return (x - center) / scale as float32, shape (rows, columns)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError(f"expected rows of {len(self.names)} columns, got shape {x.shape}")
        return np.asarray((x - np.asarray(self.center)) / np.asarray(self.scale),
                          dtype=np.float32)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of names, centers and scales."""
        document = {"names": list(self.names), "center": [float(c) for c in self.center],
                    "scale": [float(s) for s in self.scale]}
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def from_ranges(names: tuple[str, ...], ranges: tuple[tuple[float, float], ...],
                source: str) -> PublicScaling:
    """The scaling that maps each column's range [low, high] onto [0, 1]."""
    bad = [n for n, (low, high) in zip(names, ranges, strict=True) if not high > low]
    if bad:
        raise ValueError(f"columns {bad}: a range needs high > low")
    return PublicScaling(names, tuple(float(low) for low, _ in ranges),
                         tuple(float(high - low) for low, high in ranges), source)


def with_missing_indicators(x: np.ndarray, columns: tuple[int, ...], missing: np.ndarray,
                            center: tuple[float, ...], *, indicate: bool) -> np.ndarray:
    """Append one indicator column per listed column; impute the public center where missing.

    Parameters
    ----------
    x : np.ndarray
        Raw features, shape (rows, d).
    columns : tuple of int
        The k columns that can be missing.
    missing : np.ndarray
        Boolean, shape (rows, k): where each of them is missing.
    center : tuple of float
        Length d: the public center each column's missing entries take.
    indicate : bool
        True: missing entries take the center and the k indicator columns are 1 there.
        False (the magic-value comparison): ``x`` unchanged and the k columns all 0, so the
        model's width does not depend on the setting.

    Returns
    -------
    np.ndarray
        float64, shape (rows, d + k).
    """
    out = np.array(x, dtype=np.float64, copy=True)
    if not indicate:
        return np.concatenate([out, np.zeros(missing.shape)], axis=1)
    for k, column in enumerate(columns):
        out[missing[:, k], column] = center[column]
    return np.concatenate([out, missing.astype(np.float64)], axis=1)
