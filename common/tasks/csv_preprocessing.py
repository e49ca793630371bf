"""One hospital's own preprocessing of its CSV rows (task ``csv``), fitted on its training split.

Numeric features: a missing value (policy ``impute-mean``) takes the training mean, then every
value is z-scored with the training mean and std (ddof 0; a constant column keeps scale 1), as
the heart-disease task does. Categorical features: a missing value (``impute-mode``) takes the
training rows' most frequent category, then one-hot in the schema's category order. Model input
columns follow the schema's feature order (``DataSchema.encoded_feature_names``).

The statistics never leave the hospital. The client saves them next to its ledger
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

PREPROCESSING_FORMAT = "fedcare-csv-preprocessing/1"


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
    """A hospital's fitted preprocessing: z-score statistics and imputation categories.

    Attributes
    ----------
    schema : DataSchema
        The schema it was fitted under.
    numeric : dict[str, tuple[float, float]]
        Per numeric feature, (training mean, scale); scale is the std, or 1 if it is 0.
    impute_categories : dict[str, int]
        Per categorical feature with policy ``impute-mode``, the category index to impute.
    """

    schema: DataSchema
    numeric: dict[str, tuple[float, float]]
    impute_categories: dict[str, int]

    @classmethod
    def fit(cls, train: ParsedFeatures, schema: DataSchema) -> "CsvPreprocessing":
        """Fit on the training rows only.

        Raises
        ------
        PreprocessingError
            If a column to impute has no value at all among the training rows.
        """
        numeric, impute = {}, {}
        for feature in schema.features:
            if feature.type == "numeric":
                values = train.numeric[feature.name]
                present = values[~np.isnan(values)]
                if present.size == 0:
                    raise PreprocessingError(f"column {feature.name}: no value in the training "
                                             "rows to fit a mean and std on")
                std = float(present.std())
                numeric[feature.name] = (float(present.mean()), std if std > 0 else 1.0)
            elif feature.missing == "impute-mode":
                codes = train.codes[feature.name]
                counts = np.bincount(codes[codes >= 0], minlength=len(feature.categories))
                if counts.sum() == 0:
                    raise PreprocessingError(f"column {feature.name}: no value in the training "
                                             "rows to impute the most frequent category from")
                impute[feature.name] = int(np.argmax(counts))
        return cls(schema=schema, numeric=numeric, impute_categories=impute)

    def transform(self, parsed: ParsedFeatures) -> np.ndarray:
        """Encode rows: float32, shape (rows, schema.num_encoded_features).

        Raises
        ------
        PreprocessingError
            If a value is missing in a column whose policy is ``reject``.
        """
        parts = []
        for feature in self.schema.features:
            if feature.type == "numeric":
                mean, scale = self.numeric[feature.name]
                values = parsed.numeric[feature.name]
                if feature.missing == "impute-mean":
                    values = np.where(np.isnan(values), mean, values)
                elif np.isnan(values).any():
                    raise PreprocessingError(f"column {feature.name}: missing values, and the "
                                             "schema's policy is 'reject'")
                parts.append(((values - mean) / scale)[:, None])
            else:
                codes = parsed.codes[feature.name]
                if feature.name in self.impute_categories:
                    codes = np.where(codes < 0, self.impute_categories[feature.name], codes)
                elif (codes < 0).any():
                    raise PreprocessingError(f"column {feature.name}: missing values, and the "
                                             "schema's policy is 'reject'")
                parts.append(np.eye(len(feature.categories))[codes])
        return np.concatenate(parts, axis=1).astype(np.float32)  # a schema has >= 1 feature

    def to_dict(self, **provenance: Any) -> dict[str, Any]:
        """JSON document: format, schema and its sha256, statistics, and `provenance` fields."""
        return {
            "format": PREPROCESSING_FORMAT,
            "schema_sha256": self.schema.sha256,
            "schema": self.schema.to_dict(),
            "numeric": {k: {"mean": m, "scale": s} for k, (m, s) in self.numeric.items()},
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
                raise PreprocessingError(f"not a {PREPROCESSING_FORMAT} file")
            schema = DataSchema.from_dict(raw["schema"])
            if schema.sha256 != raw["schema_sha256"]:
                raise PreprocessingError("its schema does not match its schema_sha256")
            numeric = {f.name: (float(raw["numeric"][f.name]["mean"]),
                                float(raw["numeric"][f.name]["scale"]))
                       for f in schema.features if f.type == "numeric"}
            impute = {name: schema_categories(schema, name).index(str(category))
                      for name, category in raw["impute_categories"].items()}
        except PreprocessingError as error:
            raise PreprocessingError(f"preprocessing file {file}: {error}") from None
        except (OSError, ValueError, KeyError, TypeError, SchemaError, StopIteration) as error:
            raise PreprocessingError(f"preprocessing file {file} is unusable: "
                                     f"{type(error).__name__}: {error}") from None
        if any(scale <= 0 for _, scale in numeric.values()):
            raise PreprocessingError(f"preprocessing file {file}: a scale is not > 0")
        return cls(schema=schema, numeric=numeric, impute_categories=impute)


def schema_categories(schema: DataSchema, name: str) -> tuple[str, ...]:
    """Return the categories of the schema's categorical feature `name` (StopIteration if none)."""
    return next(f.categories for f in schema.features if f.name == name
                and f.type == "categorical")


def preprocessing_path(ledger_path: str | os.PathLike[str]) -> Path:
    """Return where a hospital keeps its preprocessing: ``<ledger stem>.preprocessing.json``."""
    ledger = Path(ledger_path)
    return ledger.with_name(f"{ledger.stem}.preprocessing.json")
