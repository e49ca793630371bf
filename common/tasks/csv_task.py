"""Task ``csv``: each hospital's own CSV file, under the consortium's schema.

The model's shape comes from the schema alone (input width after one-hot encoding, output by
label type, a small MLP), so the server builds it from its copy of the schema and never sees a
data file. Each hospital checks its file against its own copy of the schema, splits it about
75/25 by a keyed hash of each patient's stable identifier (the schema's ``ids`` columns, else
the row's own cells; keyed by the hospital's secret in its ledger: ``split_rows``), so a patient
is on the same side in every run, whatever the run's seed, and the ledger can pin the split;
then preprocesses
it with the schema's public ranges (shared normalisation, the default) or statistics of its
own training part only (the per-hospital setting; ``common.tasks.csv_preprocessing``).

``write_example_hospitals`` writes a schema and hospital files made of the vendored UCI Heart
Disease rows, for tests, benchmarks and docs/tasks.md's example hospitals.
"""

import hashlib
import hmac
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.data_validation import (
    CsvTable,
    DataProblem,
    category_codes,
    check_table,
    parse_numbers,
    read_table,
    sort_problems,
    summarize,
)
from common.errors import DataValidationError
from common.normalisation import PublicScaling
from common.schema import DataSchema, format_number
from common.tasks.base import CSV_TASK_NAME, HospitalData, TaskSpec
from common.tasks.csv_preprocessing import CsvPreprocessing, parse_features
from common.tasks.split import identifier_digest

TEST_FRACTION = 0.25
SPLIT_DOMAIN = b"fedcare-csv-split/1|"  # the row hash that puts a row on its side


class DataFileRejected(DataValidationError):
    """A hospital's file fails the schema check; ``problems`` lists every problem found."""

    def __init__(self, path: str | os.PathLike[str], problems: list[DataProblem]) -> None:
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: {summarize(problems)}:\n{shown}{more}")
        self.path = Path(path)
        self.problems = problems


def _data_stays_at_hospitals(*_: object, **__: object) -> list[HospitalData]:
    raise ValueError(
        "task 'csv': each hospital loads its own file (node config data-path and schema-path); "
        "nothing on the server side can load it, so it runs in deployment only"
    )


def schema_scaling(schema: DataSchema) -> PublicScaling:
    """The schema's shared normalisation over the model input columns.

    Numeric features map their public ``range`` onto [0, 1]; one-hot and indicator columns
    stay as they are.

    Raises
    ------
    ValueError
        If a numeric feature declares no range (naming them).
    """
    unranged = schema.unranged_features()
    if unranged:
        raise ValueError(f"the schema declares no range for the numeric features "
                         f"{list(unranged)}: shared normalisation needs one for each (or run "
                         "with normalisation 'per-hospital')")
    ranges = {f.name: f.range for f in schema.features if f.range is not None}
    pairs = [(r[0], r[1] - r[0]) if (r := ranges.get(name)) is not None else (0.0, 1.0)
             for name in schema.encoded_feature_names]
    return PublicScaling(schema.encoded_feature_names, tuple(c for c, _ in pairs),
                         tuple(s for _, s in pairs), "the schema's ranges")


@dataclass(frozen=True, slots=True)
class SchemaScaling:
    """``schema_scaling`` of one schema, as a value (equal for equal schemas, so TaskSpecs of
    one schema compare and hash equal: the trainer is cached by its TaskSpec).
    """

    schema: DataSchema

    def __call__(self) -> PublicScaling:
        """The schema's shared normalisation (ValueError without every numeric range)."""
        return schema_scaling(self.schema)


def csv_task_spec(schema: DataSchema) -> TaskSpec:
    """Build a schema's TaskSpec: model input and output width, hidden layers, metrics."""
    return TaskSpec(
        name=CSV_TASK_NAME,
        kind=schema.kind,
        num_features=schema.num_encoded_features,
        num_outputs=schema.num_outputs,
        hidden_units=schema.hidden_units,
        default_hospitals=3,
        load=_data_stays_at_hospitals,
        target_scale=schema.label.scale,
        target_offset=schema.label.offset,
        scaling=SchemaScaling(schema),
        per_hospital_scaling=True,
    )


def load_schema_task(path: str | os.PathLike[str], *, expected_sha256: str) -> TaskSpec:
    """Build the csv TaskSpec from a schema file, checked against the run's schema hash.

    Raises
    ------
    common.schema.SchemaError
        If the schema file is unusable.
    ValueError
        If its sha256 differs from `expected_sha256` (both hashes named).
    """
    schema = DataSchema.load(path)
    if schema.sha256 != expected_sha256:
        raise ValueError(f"schema {path} has sha256 {schema.sha256}, but the run config's "
                         f"csv.schema-sha256 is {expected_sha256}")
    return csv_task_spec(schema)


def encode_labels(table: CsvTable, schema: DataSchema) -> np.ndarray:
    """Labels as float32, shape (rows,): class index (binary/multiclass) or the value."""
    cells = table.frame[schema.label.name]
    if schema.label.type == "numeric":
        return parse_numbers(cells).astype(np.float32)
    return category_codes(cells, schema.label.classes).astype(np.float32)


@dataclass(frozen=True, slots=True)
class CsvHospital:
    """A hospital's data ready for training, and the preprocessing fitted on its train part."""

    data: HospitalData
    preprocessing: CsvPreprocessing


def row_keys(table: CsvTable, schema: DataSchema) -> list[str]:
    """Each data row's identity for the split: its identifier cells (the schema's ``ids``),
    else its schema columns' cells, as written.
    """
    columns = list(schema.ids) if schema.ids else list(schema.columns)
    cells = table.frame[columns].astype(str)
    return ["\x1f".join(row) for row in cells.itertuples(index=False, name=None)]


def split_rows(keys: list[str], secret: bytes = b"") -> tuple[np.ndarray, np.ndarray]:
    """Row positions of a train/test split by a keyed hash of each row's key (about 25% test).

    A row is a test row when the first 8 bytes of HMAC-SHA256(``secret``, ``SPLIT_DOMAIN`` +
    key), as an integer, fall in the lowest ``TEST_FRACTION`` of their range: the same patient
    is on the same side in every run, whatever the seed, and in any file that holds it; without
    the hospital's secret nobody can tell which side an identifier is on. If that leaves no
    test row or fewer than 3 training rows, the rows with the smallest hashes make up the 25%
    instead.
    """
    hashes = np.array([int.from_bytes(hmac.new(secret, SPLIT_DOMAIN + k.encode(),
                                               hashlib.sha256).digest()[:8], "big")
                       for k in keys], dtype=np.float64)
    is_test = hashes < TEST_FRACTION * 2.0**64
    if not is_test.any() or (~is_test).sum() < 3:
        is_test = np.zeros(len(keys), dtype=bool)
        is_test[np.argsort(hashes, kind="stable")[:math.ceil(TEST_FRACTION * len(keys))]] = True
    positions = np.arange(len(keys))
    return positions[~is_test], positions[is_test]


def load_csv_hospital(
    data_path: str | os.PathLike[str], schema: DataSchema, *, name: str,
    normalisation: str = "public", missing_indicator: bool = True, split_key: bytes = b"",
) -> CsvHospital:
    """Check, split (keyed by ``split_key``, the hospital's secret) and preprocess its CSV file.

    Raises
    ------
    DataFileRejected
        If the file fails the schema check (every problem listed, with row and column).
    PreprocessingError
        If it cannot be normalised so (e.g. shared normalisation without the schema's ranges).
    """
    table, problems = read_table(data_path)
    if table is not None:
        problems += check_table(table, schema)
    if problems or table is None:
        raise DataFileRejected(data_path, sort_problems(problems, schema))
    labels = encode_labels(table, schema)
    keys = row_keys(table, schema)
    train, test = split_rows(keys, split_key)
    parsed = parse_features(table.frame, schema)
    preprocessing = CsvPreprocessing.fit(parsed.take(train), schema, normalisation=normalisation,
                                         missing_indicator=missing_indicator)
    data = HospitalData(
        name=name,
        x_train=preprocessing.transform(parsed.take(train)),
        y_train=labels[train],
        x_test=preprocessing.transform(parsed.take(test)),
        y_test=labels[test],
        split_digest=identifier_digest([keys[i] for i in test], [keys[i] for i in train]),
    )
    return CsvHospital(data=data, preprocessing=preprocessing)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


EXAMPLE_LABEL = "heart_disease"
EXAMPLE_SCHEMA: dict[str, Any] = {
    "schema_version": 1,
    "description": "UCI Heart Disease columns as FLamby keeps them (slope, ca, thal dropped); "
                   "heart_disease is 1 when the angiographic diagnosis num > 0",
    "features": [
        {"name": "age", "type": "numeric", "range": [20, 80], "description": "years"},
        {"name": "sex", "type": "categorical", "categories": [0, 1], "description": "1 = male"},
        {"name": "cp", "type": "categorical", "categories": [1, 2, 3, 4],
         "description": "chest pain type"},
        {"name": "trestbps", "type": "numeric", "missing": "impute-mean", "range": [80, 200],
         "description": "resting blood pressure, mm Hg (0 in the source: not measured)"},
        {"name": "chol", "type": "numeric", "missing": "impute-mean", "range": [100, 600],
         "description": "serum cholesterol, mg/dl (0 in the source: not measured)"},
        {"name": "fbs", "type": "categorical", "categories": [0, 1],
         "description": "fasting blood sugar > 120 mg/dl"},
        {"name": "restecg", "type": "categorical", "categories": [0, 1, 2],
         "description": "resting ECG result"},
        {"name": "thalach", "type": "numeric", "range": [60, 220],
         "description": "maximum heart rate"},
        {"name": "exang", "type": "categorical", "categories": [0, 1],
         "description": "exercise-induced angina"},
        {"name": "oldpeak", "type": "numeric", "range": [-3, 7],
         "description": "ST depression, mm"},
    ],
    "label": {"name": EXAMPLE_LABEL, "type": "binary", "classes": [0, 1]},
    "missing": "reject",
    "min_rows": 20,
}


def write_example_hospitals(directory: str | os.PathLike[str], hospitals: int
                            ) -> tuple[Path, list[Path]]:
    """Write ``schema.json`` and ``hospital-<i>.csv`` (i < `hospitals`) into `directory`.

    Hospital i holds the real rows of UCI hospital i % 4 (cleveland, hungary, switzerland,
    va), after FLamby's cleaning (740 rows in the four); label ``heart_disease`` = num > 0.
    A resting blood pressure or cholesterol of 0 (not measured) is written as a missing cell.

    Returns
    -------
    tuple[Path, list[Path]]
        The schema file and the hospitals' CSV files, in hospital order.
    """
    from common.tasks.heart_disease import HOSPITALS, load_frame

    if hospitals < 1:
        raise ValueError(f"hospitals must be >= 1, got {hospitals}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    schema_path = out / "schema.json"
    schema_path.write_text(json.dumps(EXAMPLE_SCHEMA, indent=2) + "\n", encoding="utf-8")
    columns = [f["name"] for f in EXAMPLE_SCHEMA["features"]]
    paths = []
    for index in range(hospitals):
        frame = load_frame(HOSPITALS[index % len(HOSPITALS)])
        frame = frame[columns].assign(**{EXAMPLE_LABEL: frame["label"]})
        path = out / f"hospital-{index}.csv"
        cells = frame.map(format_number)
        for column in ("trestbps", "chol"):
            cells.loc[frame[column] == 0, column] = ""
        cells.to_csv(path, index=False)
        paths.append(path)
    return schema_path, paths
