"""The consortium's data schema: what every hospital's CSV file must hold (task ``csv``).

A schema is a JSON file the consortium agrees on and every hospital keeps locally::

    {
      "schema_version": 1,
      "features": [
        {"name": "age", "type": "numeric"},
        {"name": "cp", "type": "categorical", "categories": [1, 2, 3, 4]},
        {"name": "chol", "type": "numeric", "missing": "impute-mean", "range": [100, 600]}
      ],
      "label": {"name": "heart_disease", "type": "binary", "classes": [0, 1]},
      "missing": "reject",
      "min_rows": 20
    }

Feature types: ``numeric`` or ``categorical`` (with its allowed ``categories``). Label types:
``binary`` (two ``classes``, negative first), ``multiclass`` (two or more ``classes``) or
``numeric`` (regression; optional ``offset`` and ``scale``: the model predicts offset + scale * h
in the label's units). Missing-value policy: ``missing`` per feature (``reject``,
``impute-mean`` for numeric, ``impute-mode`` for categorical) or for all features at the top
level (``reject`` or ``impute``: mean or most frequent category by type, from the hospital's
own training rows). A missing label is always a problem. Optional ``range`` ([low, high]) of a
numeric feature: the values the consortium expects, public, from which every hospital scales
the column onto [0, 1] (shared normalisation, no epsilon; values outside are kept, not clipped);
a numeric feature that may be imputed also gets a missing-value indicator column after all
features (``encoded_feature_names``). Optional: ``missing_markers`` (cells
that mean missing, default ``""``, ``NA``, ``N/A``, ``NaN``, ``?``), ``min_rows`` (default 20),
``hidden_units`` of the model (default ``[16]``), ``description`` strings (not hashed),
``ids``: the columns in the identifier role (``["patient_id"]``): allowed in a hospital's files,
never read for training nor sent, and copied beside each prediction by ``fedcare predict``
(hashed only when declared, so a schema without them keeps its hash).

``DataSchema.sha256`` hashes the canonical JSON of the normalised schema (sorted keys, no
whitespace, defaults filled in, categories as strings), so two files that differ only in
formatting, key order or descriptions have the same hash.
"""

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # common.tasks imports this module (task csv): no import cycle at run time
    from common.tasks.base import TaskKind

SCHEMA_VERSION = 1
FeatureType = Literal["numeric", "categorical"]
LabelType = Literal["binary", "multiclass", "numeric"]
MissingPolicy = Literal["reject", "impute-mean", "impute-mode"]

FEATURE_TYPES = ("numeric", "categorical")
LABEL_TYPES = ("binary", "multiclass", "numeric")
DEFAULT_MISSING_MARKERS = ("", "NA", "N/A", "NaN", "?")
DEFAULT_MIN_ROWS = 20
MIN_ROWS_FLOOR = 4  # a 75/25 split needs at least 3 training rows and 1 test row
DEFAULT_HIDDEN_UNITS = (16,)

_TOP_KEYS = {"schema_version", "features", "label", "missing", "missing_markers", "min_rows",
             "hidden_units", "description", "ids"}
_FEATURE_KEYS = {"name", "type", "categories", "missing", "range", "description"}
_LABEL_KEYS = {"name", "type", "classes", "offset", "scale", "description"}
_IMPUTE_BY_TYPE: dict[str, MissingPolicy] = {"numeric": "impute-mean",
                                             "categorical": "impute-mode"}


class SchemaError(ValueError):
    """The schema file is unusable; the message names the file and the offending key."""


@dataclass(frozen=True, slots=True)
class FeatureColumn:
    """One feature column: its type, allowed categories (as strings) and missing policy."""

    name: str
    type: FeatureType
    missing: MissingPolicy
    categories: tuple[str, ...] = ()
    range: tuple[float, float] | None = None  # numeric: the public [low, high]

    @property
    def width(self) -> int:
        """Model input columns it takes: 1 (numeric) or one per category (one-hot)."""
        return 1 if self.type == "numeric" else len(self.categories)

    @property
    def indicated(self) -> bool:
        """Whether it has a missing-value indicator column (a numeric feature that may be
        imputed).
        """
        return self.type == "numeric" and self.missing == "impute-mean"


@dataclass(frozen=True, slots=True)
class LabelColumn:
    """The label column: binary / multiclass with its classes (as strings), or numeric."""

    name: str
    type: LabelType
    classes: tuple[str, ...] = ()
    offset: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class DataSchema:
    """A validated data schema (see the module docstring for the file format)."""

    features: tuple[FeatureColumn, ...]
    label: LabelColumn
    missing_markers: tuple[str, ...] = DEFAULT_MISSING_MARKERS
    min_rows: int = DEFAULT_MIN_ROWS
    hidden_units: tuple[int, ...] = DEFAULT_HIDDEN_UNITS
    ids: tuple[str, ...] = ()  # identifier columns (patient ids): passed through, never used

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DataSchema":
        """Read and validate a schema file.

        Raises
        ------
        SchemaError
            If the file is missing or unreadable, not JSON, or breaks a rule of the format
            (the message names the file and the key).
        """
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise SchemaError(f"schema {file}: cannot read it ({error})") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise SchemaError(f"schema {file}: not valid JSON at line {error.lineno}, column "
                              f"{error.colno}: {error.msg}") from None
        try:
            return cls.from_dict(raw)
        except SchemaError as error:
            raise SchemaError(f"schema {file}: {error}") from None

    @classmethod
    def from_dict(cls, raw: Any) -> "DataSchema":
        """Validate a parsed schema document; raise SchemaError naming the offending key."""
        if not isinstance(raw, dict):
            raise SchemaError("the schema must be a JSON object")
        _check_keys(raw, _TOP_KEYS, "the schema")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(f"schema_version must be {SCHEMA_VERSION}, got "
                              f"{raw.get('schema_version')!r}")
        default_missing = raw.get("missing", "reject")
        if default_missing not in ("reject", "impute"):
            raise SchemaError(f"missing must be 'reject' or 'impute', got {default_missing!r}")
        features_raw = raw.get("features")
        if not isinstance(features_raw, list) or not features_raw:
            raise SchemaError("features must be a non-empty list of columns")
        features = tuple(_feature(f, i, default_missing) for i, f in enumerate(features_raw))
        label = _label(raw.get("label"))
        ids = _ids(raw.get("ids", []))
        names = [f.name for f in features] + [label.name] + list(ids)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"column names must be unique; repeated: {duplicates}")
        markers = raw.get("missing_markers", list(DEFAULT_MISSING_MARKERS))
        if not isinstance(markers, list) or not all(isinstance(m, str) for m in markers):
            raise SchemaError(f"missing_markers must be a list of strings, got {markers!r}")
        markers = [m.strip() for m in markers]
        columns: tuple[FeatureColumn | LabelColumn, ...] = (*features, label)
        for column in columns:
            clash = sorted(set(column.categories if isinstance(column, FeatureColumn)
                               else column.classes) & set(markers))
            if clash:
                raise SchemaError(f"column {column.name!r}: {clash} are missing_markers and "
                                  "cannot also be categories or classes")
        min_rows = raw.get("min_rows", DEFAULT_MIN_ROWS)
        if not _is_int(min_rows) or min_rows < MIN_ROWS_FLOOR:
            raise SchemaError(f"min_rows must be an integer >= {MIN_ROWS_FLOOR}, got {min_rows!r}")
        hidden = raw.get("hidden_units", list(DEFAULT_HIDDEN_UNITS))
        if not isinstance(hidden, list) or not all(_is_int(h) and h >= 1 for h in hidden):
            raise SchemaError(f"hidden_units must be a list of integers >= 1, got {hidden!r}")
        return cls(features=features, label=label, missing_markers=tuple(dict.fromkeys(markers)),
                   min_rows=int(min_rows), hidden_units=tuple(int(h) for h in hidden), ids=ids)

    def to_dict(self) -> dict[str, Any]:
        """Return the normalised schema document (defaults filled in); ``from_dict`` reads it."""
        label: dict[str, Any] = {"name": self.label.name, "type": self.label.type}
        if self.label.type == "numeric":
            label.update(offset=self.label.offset, scale=self.label.scale)
        else:
            label["classes"] = list(self.label.classes)
        features = []
        for f in self.features:
            entry: dict[str, Any] = {"name": f.name, "type": f.type, "missing": f.missing}
            if f.type == "categorical":
                entry["categories"] = list(f.categories)
            if f.range is not None:
                entry["range"] = list(f.range)
            features.append(entry)
        document = {"schema_version": SCHEMA_VERSION, "features": features, "label": label,
                    "missing_markers": list(self.missing_markers), "min_rows": self.min_rows,
                    "hidden_units": list(self.hidden_units)}
        if self.ids:
            document["ids"] = list(self.ids)
        return document

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the canonical JSON: sorted keys, no whitespace, UTF-8."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the CSV must have: the features in schema order, then the label."""
        return (*(f.name for f in self.features), self.label.name)

    @property
    def num_encoded_features(self) -> int:
        """Width of the model input: one-hot categorical features, then the indicators."""
        return sum(f.width for f in self.features) + sum(f.indicated for f in self.features)

    @property
    def encoded_feature_names(self) -> tuple[str, ...]:
        """Names of the model input columns: ``age``, ``cp=1``, ``cp=2``, ..., then
        ``chol_missing`` for each numeric feature that may be imputed.
        """
        names: list[str] = []
        for f in self.features:
            names += [f.name] if f.type == "numeric" else [f"{f.name}={c}" for c in f.categories]
        return (*names, *(f"{f.name}_missing" for f in self.features if f.indicated))

    def unranged_features(self) -> tuple[str, ...]:
        """The numeric features without a declared ``range`` (shared normalisation needs one)."""
        return tuple(f.name for f in self.features if f.type == "numeric" and f.range is None)

    @property
    def kind(self) -> "TaskKind":
        """The learning task the label defines."""
        return "regression" if self.label.type == "numeric" else self.label.type

    @property
    def num_outputs(self) -> int:
        """Model output units: the class count for multiclass, otherwise 1."""
        return len(self.label.classes) if self.label.type == "multiclass" else 1


def _ids(raw: Any) -> tuple[str, ...]:
    """The identifier columns' names (``ids``): a list of distinct non-empty strings."""
    if not isinstance(raw, list) or not all(isinstance(n, str) and n.strip() == n and n
                                            for n in raw):
        raise SchemaError(f"ids must be a list of column names (non-empty strings without "
                          f"surrounding spaces), got {raw!r}")
    return tuple(raw)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SchemaError(f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}")


def _name(raw: dict[str, Any], where: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise SchemaError(f"{where}: name must be a non-empty string without surrounding "
                          f"spaces, got {name!r}")
    return name


def _values(raw: Any, where: str) -> tuple[str, ...]:
    """Categories or classes as strings: JSON numbers 1 and 1.0 both become "1"."""
    if not isinstance(raw, list) or not raw:
        raise SchemaError(f"{where} must be a non-empty list, got {raw!r}")
    values = []
    for value in raw:
        if isinstance(value, str) and value.strip():
            values.append(value.strip())
        elif _is_finite_number(value):
            values.append(format_number(value))
        else:
            raise SchemaError(f"{where}: {value!r} is not a non-empty string or a finite number")
    if len(set(values)) != len(values):
        raise SchemaError(f"{where} has repeated values: {values}")
    return tuple(values)


def format_number(value: float) -> str:
    """Spell a number as categories are stored: 1.0 -> "1", 2.5 -> "2.5"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _feature(raw: Any, index: int, default_missing: str) -> FeatureColumn:
    where = f"features[{index}]"
    if not isinstance(raw, dict):
        raise SchemaError(f"{where} must be an object with name and type, got {raw!r}")
    _check_keys(raw, _FEATURE_KEYS, where)
    name = _name(raw, where)
    where = f"feature {name!r}"
    kind = raw.get("type")
    if kind not in FEATURE_TYPES:
        raise SchemaError(f"{where}: type must be one of {FEATURE_TYPES}, got {kind!r}")
    categories: tuple[str, ...] = ()
    if kind == "categorical":
        categories = _values(raw.get("categories"), f"{where}: categories")
        if len(categories) < 2:
            raise SchemaError(f"{where}: a categorical column needs at least 2 categories")
    elif "categories" in raw:
        raise SchemaError(f"{where}: categories are only for type 'categorical'")
    impute = _IMPUTE_BY_TYPE[kind]
    missing = raw.get("missing", impute if default_missing == "impute" else "reject")
    if missing not in ("reject", impute):
        raise SchemaError(f"{where}: missing must be 'reject' or {impute!r} for a {kind} "
                          f"column, got {missing!r}")
    return FeatureColumn(name=name, type=kind, missing=missing, categories=categories,
                         range=_range(raw, where, kind))


def _range(raw: dict[str, Any], where: str, kind: str) -> tuple[float, float] | None:
    """A numeric feature's public ``range`` [low, high] (None when absent)."""
    if "range" not in raw:
        return None
    value = raw["range"]
    if kind != "numeric":
        raise SchemaError(f"{where}: range is only for type 'numeric'")
    if (not isinstance(value, list) or len(value) != 2
            or not all(_is_finite_number(v) for v in value) or not value[1] > value[0]):
        raise SchemaError(f"{where}: range must be [low, high] with finite numbers and "
                          f"high > low, got {value!r}")
    return float(value[0]), float(value[1])


def _label(raw: Any) -> LabelColumn:
    if not isinstance(raw, dict):
        raise SchemaError(f"label must be an object with name and type, got {raw!r}")
    _check_keys(raw, _LABEL_KEYS, "label")
    name = _name(raw, "label")
    kind = raw.get("type")
    if kind not in LABEL_TYPES:
        raise SchemaError(f"label {name!r}: type must be one of {LABEL_TYPES}, got {kind!r}")
    if kind == "numeric":
        if "classes" in raw:
            raise SchemaError(f"label {name!r}: classes are only for binary/multiclass labels")
        offset, scale = raw.get("offset", 0.0), raw.get("scale", 1.0)
        for key, value in (("offset", offset), ("scale", scale)):
            if not _is_finite_number(value):
                raise SchemaError(f"label {name!r}: {key} must be a finite number, got {value!r}")
        if scale <= 0:
            raise SchemaError(f"label {name!r}: scale must be > 0, got {scale!r}")
        return LabelColumn(name=name, type=kind, offset=float(offset), scale=float(scale))
    for key in ("offset", "scale"):
        if key in raw:
            raise SchemaError(f"label {name!r}: {key} is only for numeric labels")
    classes = _values(raw.get("classes"), f"label {name!r}: classes")
    if kind == "binary" and len(classes) != 2:
        raise SchemaError(f"label {name!r}: a binary label needs exactly 2 classes "
                          f"(negative first), got {list(classes)}")
    if kind == "multiclass" and len(classes) < 2:
        raise SchemaError(f"label {name!r}: a multiclass label needs at least 2 classes")
    return LabelColumn(name=name, type=kind, classes=classes)
