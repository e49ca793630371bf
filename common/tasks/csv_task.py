"""Task ``csv``: each hospital's own CSV file, under the consortium's schema.

The model's shape comes from the schema alone (input width after one-hot encoding, output by
label type, a small MLP), so the server builds it from its copy of the schema and never sees a
data file. Each hospital checks its file against its own copy of the schema, splits it 75/25
(seeded by the run seed; stratified by class for classification) and preprocesses it with
statistics of its own training part only (``common.tasks.csv_preprocessing``).

``write_example_hospitals`` writes a schema and hospital files made of the vendored UCI Heart
Disease rows, for tests, benchmarks and docs/tasks.md's example hospitals.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

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
from common.schema import DataSchema, format_number
from common.tasks.base import CSV_TASK_NAME, HospitalData, TaskSpec
from common.tasks.csv_preprocessing import CsvPreprocessing, parse_features

TEST_FRACTION = 0.25


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


def split_rows(labels: np.ndarray, *, classification: bool, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of a seeded 75/25 train/test split, stratified by class when possible.

    Stratification needs every class twice and room for each class on both sides; otherwise
    the split is a plain seeded shuffle.
    """
    positions = np.arange(len(labels))
    stratify = labels if classification else None
    if classification:
        counts = np.unique(labels, return_counts=True)[1]
        test_rows = int(np.ceil(TEST_FRACTION * len(labels)))
        if counts.min() < 2 or test_rows < len(counts) or len(labels) - test_rows < len(counts):
            stratify = None
    train, test = train_test_split(positions, test_size=TEST_FRACTION, random_state=seed,
                                   stratify=stratify)
    return np.sort(train), np.sort(test)


def load_csv_hospital(
    data_path: str | os.PathLike[str], schema: DataSchema, *, name: str, seed: int
) -> CsvHospital:
    """Check, split and preprocess one hospital's CSV file.

    Raises
    ------
    DataFileRejected
        If the file fails the schema check (every problem listed, with row and column).
    """
    table, problems = read_table(data_path)
    if table is not None:
        problems += check_table(table, schema)
    if problems or table is None:
        raise DataFileRejected(data_path, sort_problems(problems, schema))
    labels = encode_labels(table, schema)
    train, test = split_rows(labels, classification=schema.kind != "regression", seed=seed)
    parsed = parse_features(table.frame, schema)
    preprocessing = CsvPreprocessing.fit(parsed.take(train), schema)
    data = HospitalData(
        name=name,
        x_train=preprocessing.transform(parsed.take(train)),
        y_train=labels[train],
        x_test=preprocessing.transform(parsed.take(test)),
        y_test=labels[test],
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
        {"name": "age", "type": "numeric", "description": "years"},
        {"name": "sex", "type": "categorical", "categories": [0, 1], "description": "1 = male"},
        {"name": "cp", "type": "categorical", "categories": [1, 2, 3, 4],
         "description": "chest pain type"},
        {"name": "trestbps", "type": "numeric", "description": "resting blood pressure, mm Hg"},
        {"name": "chol", "type": "numeric", "missing": "impute-mean",
         "description": "serum cholesterol, mg/dl"},
        {"name": "fbs", "type": "categorical", "categories": [0, 1],
         "description": "fasting blood sugar > 120 mg/dl"},
        {"name": "restecg", "type": "categorical", "categories": [0, 1, 2],
         "description": "resting ECG result"},
        {"name": "thalach", "type": "numeric", "description": "maximum heart rate"},
        {"name": "exang", "type": "categorical", "categories": [0, 1],
         "description": "exercise-induced angina"},
        {"name": "oldpeak", "type": "numeric", "description": "ST depression, mm"},
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
        frame.map(format_number).to_csv(path, index=False)
        paths.append(path)
    return schema_path, paths
