"""A hospital's preprocessing of its CSV rows (task ``csv``): shared constants, or its own.

Shared normalisation (``public``, the default): every numeric feature is mapped onto [0, 1] by
the schema's public ``range`` (no statistic of any hospital's rows, no epsilon); a missing
value (policy ``impute-mean``) takes the range's midpoint and its indicator column is 1; a
missing categorical value (``impute-mode``) is an all-zero one-hot (no category). Per-hospital
(a setting, not covered by the privacy guarantee): a missing numeric value takes the training
mean, every value is z-scored with the training mean and std (ddof 0; a constant column keeps
scale 1), a missing category takes the training rows' most frequent one. Without the
missing-value indicator its columns stay 0. Model input columns follow the schema's feature
order, then the indicators (``DataSchema.encoded_feature_names``).

Nothing of it leaves the hospital. The client saves it next to its ledger
(``<ledger>.preprocessing.json``) so ``fedcare predict`` applies exactly what training used.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.data_validation import category_codes, missing_mask, parse_numbers
from common.schema import DataSchema, SchemaError

PREPROCESSING_FORMAT = "fedcare-csv-preprocessing/2"
NORMALISATIONS = ("public", "per-hospital")


class PreprocessingError(ValueError):
    """Rows cannot be encoded, or a preprocessing file is unusable (names file and column)."""


@dataclass(frozen=True, slots=True)
class ParsedFeatures:
    """A table's feature cells parsed: numbers, and category indices.

    Attributes
    ----------
    numeric : dict[str, np.ndarray]
        Per numeric feature, float64 values, shape (rows,); NaN where missing.
    codes : dict[str, np.ndarray]
        Per categorical feature, the category index, shape (rows,); -1 where missing.
    """

    numeric: dict[str, np.ndarray]
    codes: dict[str, np.ndarray]

    def take(self, rows: np.ndarray) -> "ParsedFeatures":
        """Return the given rows (positions) only."""
        return ParsedFeatures({k: v[rows] for k, v in self.numeric.items()},
                              {k: v[rows] for k, v in self.codes.items()})


def parse_features(frame: pd.DataFrame, schema: DataSchema) -> ParsedFeatures:
    """Parse the feature columns of a validated table of text cells.

    Raises
    ------
    PreprocessingError
        If a present cell is not a number / not a category (the table was not validated).
    """
    numeric, codes = {}, {}
    for feature in schema.features:
        cells = frame[feature.name]
        missing = missing_mask(cells, schema)
        if feature.type == "numeric":
            values = np.where(missing, np.nan, parse_numbers(cells))
            invalid = ~missing & np.isnan(values)
            numeric[feature.name] = values
        else:
            values = np.where(missing, -1, category_codes(cells, feature.categories))
            invalid = ~missing & (values < 0)
            codes[feature.name] = values
        if invalid.any():
            row = int(cells.index[np.argmax(invalid)])
            raise PreprocessingError(f"row {row}, column {feature.name}: not a valid "
                                     f"{feature.type} value (run the schema check first)")
    return ParsedFeatures(numeric, codes)


@dataclass(frozen=True, slots=True)
class CsvPreprocessing:
    """A hospital's preprocessing: per numeric feature (center, scale) and imputed value.

    Attributes
    ----------
    schema : DataSchema
        The schema it was made under.
    normalisation : {"public", "per-hospital"}
        Where the constants come from: the schema's ranges, or the hospital's training rows.
    missing_indicator : bool
        Whether the indicator columns mark missing values (else they stay 0).
    numeric : dict[str, tuple[float, float]]
        Per numeric feature, (center, scale): the value maps to (value - center) / scale.
    impute_numeric : dict[str, float]
        Per numeric feature, the value a missing entry takes (before scaling).
    impute_categories : dict[str, int]
        Per-hospital only: per categorical feature with policy ``impute-mode``, the category
        index to impute (shared normalisation encodes a missing category as no category).
    """

    schema: DataSchema
    normalisation: str
    missing_indicator: bool
    numeric: dict[str, tuple[float, float]]
    impute_numeric: dict[str, float]
    impute_categories: dict[str, int]

    @classmethod
    def fit(cls, train: ParsedFeatures, schema: DataSchema, *, normalisation: str = "public",
            missing_indicator: bool = True) -> "CsvPreprocessing":
        """Make the preprocessing: from the schema alone (public) or the training rows.

        Raises
        ------
        PreprocessingError
            If the normalisation is unknown, a numeric feature has no ``range`` under shared
            normalisation, or (per-hospital) a column to fit has no value in the training rows.
        """
        if normalisation not in NORMALISATIONS:
            raise PreprocessingError(f"normalisation must be one of {NORMALISATIONS}, got "
                                     f"{normalisation!r}")
        if normalisation == "public":
            unranged = schema.unranged_features()
            if unranged:
                raise PreprocessingError(
                    f"shared normalisation needs every numeric feature's public range in the "
                    f"schema; {list(unranged)} declare none: add \"range\": [low, high] to "
                    "them (the consortium's agreed values), or run with normalisation "
                    "'per-hospital' (not covered by the privacy guarantee)")
            ranges = {f.name: (f.range[0], f.range[1] - f.range[0])
                      for f in schema.features if f.range is not None}
            midpoints = {f.name: (f.range[0] + f.range[1]) / 2
                         for f in schema.features if f.range is not None}
            return cls(schema, normalisation, missing_indicator, ranges, midpoints, {})
        numeric: dict[str, tuple[float, float]] = {}
        impute_numeric: dict[str, float] = {}
        impute: dict[str, int] = {}
        for feature in schema.features:
            if feature.type == "numeric":
                numeric[feature.name], impute_numeric[feature.name] = _own_statistics(
                    train.numeric[feature.name], feature.name)
            elif feature.missing == "impute-mode":
                impute[feature.name] = _own_mode(train.codes[feature.name], feature.name,
                                                 len(feature.categories))
        return cls(schema, normalisation, missing_indicator, numeric, impute_numeric, impute)

    def transform(self, parsed: ParsedFeatures) -> np.ndarray:
        """Encode rows: float32, shape (rows, schema.num_encoded_features).

        Raises
        ------
        PreprocessingError
            If a value is missing in a column whose policy is ``reject``.
        """
        parts, indicators = [], []
        for feature in self.schema.features:
            if feature.type == "numeric":
                center, scale = self.numeric[feature.name]
                values = parsed.numeric[feature.name]
                missing = np.isnan(values)
                if feature.missing == "impute-mean":
                    values = np.where(missing, self.impute_numeric[feature.name], values)
                    indicators.append(missing & self.missing_indicator)
                elif missing.any():
                    raise PreprocessingError(f"column {feature.name}: missing values, and the "
                                             "schema's policy is 'reject'")
                parts.append(((values - center) / scale)[:, None])
            else:
                parts.append(self._one_hot(feature.name, parsed.codes[feature.name],
                                           len(feature.categories), feature.missing))
        parts += [flags.astype(np.float64)[:, None] for flags in indicators]
        return np.concatenate(parts, axis=1).astype(np.float32)  # a schema has >= 1 feature

    def _one_hot(self, name: str, codes: np.ndarray, width: int, policy: str) -> np.ndarray:
        """One-hot of category indices; a missing one imputed (per-hospital) or no category."""
        if name in self.impute_categories:
            codes = np.where(codes < 0, self.impute_categories[name], codes)
        elif (codes < 0).any() and policy != "impute-mode":
            raise PreprocessingError(f"column {name}: missing values, and the schema's "
                                     "policy is 'reject'")
        return np.asarray(np.vstack([np.eye(width), np.zeros((1, width))])[codes])  # -1: zeros

    def to_dict(self, **provenance: Any) -> dict[str, Any]:
        """JSON document: format, schema and its sha256, the constants, `provenance` fields."""
        return {
            "format": PREPROCESSING_FORMAT,
            "schema_sha256": self.schema.sha256,
            "schema": self.schema.to_dict(),
            "normalisation": self.normalisation,
            "missing_indicator": self.missing_indicator,
            "numeric": {k: {"center": c, "scale": s, "impute": self.impute_numeric[k]}
                        for k, (c, s) in self.numeric.items()},
            "impute_categories": {k: schema_categories(self.schema, k)[i]
                                  for k, i in self.impute_categories.items()},
            **provenance,
        }

    def save(self, path: str | os.PathLike[str], **provenance: Any) -> None:
        """Write the JSON document atomically (temp file, fsync, rename)."""
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(**provenance), handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, file)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "CsvPreprocessing":
        """Read a file written by ``save``.

        Raises
        ------
        PreprocessingError
            If the file is unreadable, of another format, or inconsistent with its schema.
        """
        file = Path(path)
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or raw.get("format") != PREPROCESSING_FORMAT:
                raise PreprocessingError(f"not a {PREPROCESSING_FORMAT} file (one written by "
                                         "another fedcare version: train again to rewrite it)")
            schema = DataSchema.from_dict(raw["schema"])
            if schema.sha256 != raw["schema_sha256"]:
                raise PreprocessingError("its schema does not match its schema_sha256")
            numeric = {f.name: (float(raw["numeric"][f.name]["center"]),
                                float(raw["numeric"][f.name]["scale"]))
                       for f in schema.features if f.type == "numeric"}
            impute_numeric = {name: float(raw["numeric"][name]["impute"]) for name in numeric}
            impute = {name: schema_categories(schema, name).index(str(category))
                      for name, category in raw["impute_categories"].items()}
            normalisation, indicator = raw["normalisation"], raw["missing_indicator"]
            if normalisation not in NORMALISATIONS or not isinstance(indicator, bool):
                raise PreprocessingError("normalisation or missing_indicator is invalid")
        except PreprocessingError as error:
            raise PreprocessingError(f"preprocessing file {file}: {error}") from None
        except (OSError, ValueError, KeyError, TypeError, SchemaError, StopIteration) as error:
            raise PreprocessingError(f"preprocessing file {file} is unusable: "
                                     f"{type(error).__name__}: {error}") from None
        if any(not scale > 0 for _, scale in numeric.values()):
            raise PreprocessingError(f"preprocessing file {file}: a scale is not > 0")
        return cls(schema, normalisation, indicator, numeric, impute_numeric, impute)


def _own_statistics(values: np.ndarray, name: str) -> tuple[tuple[float, float], float]:
    """Per-hospital: ((training mean, std or 1), training mean) of a numeric column."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        raise PreprocessingError(f"column {name}: no value in the training rows to fit a mean "
                                 "and std on")
    std = float(present.std())
    return (float(present.mean()), std if std > 0 else 1.0), float(present.mean())


def _own_mode(codes: np.ndarray, name: str, width: int) -> int:
    """Per-hospital: the training rows' most frequent category of a categorical column."""
    counts = np.bincount(codes[codes >= 0], minlength=width)
    if counts.sum() == 0:
        raise PreprocessingError(f"column {name}: no value in the training rows to impute the "
                                 "most frequent category from")
    return int(np.argmax(counts))


def schema_categories(schema: DataSchema, name: str) -> tuple[str, ...]:
    """Return the categories of the schema's categorical feature `name` (StopIteration if none)."""
    return next(f.categories for f in schema.features if f.name == name
                and f.type == "categorical")


def preprocessing_path(ledger_path: str | os.PathLike[str]) -> Path:
    """Return where a hospital keeps its preprocessing: ``<ledger stem>.preprocessing.json``."""
    ledger = Path(ledger_path)
    return ledger.with_name(f"{ledger.stem}.preprocessing.json")
