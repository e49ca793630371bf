"""Predictions for a hospital's new patients with its own preprocessing (task csv; no Flower).

The new file goes through the same schema check as training data, except that the label
column is optional (when present it is copied to the output for comparison, not checked).
Identifier columns the schema declares (``ids``, e.g. ``patient_id``) are copied beside each
prediction, so outputs are matched to patients by identifier, not only by row number.
Features are encoded with the preprocessing statistics the hospital saved when it trained,
so a patient is scaled exactly as its training rows were.
"""

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.data_validation import DataProblem, check_table, read_table, sort_problems
from common.schema import DataSchema
from common.tasks.csv_preprocessing import CsvPreprocessing, parse_features

ROW_COLUMN = "row"
PREDICTED_COLUMN = "predicted"


@dataclass(frozen=True, slots=True)
class EncodedPatients:
    """New patients' model inputs and what the output file repeats from the input.

    Attributes
    ----------
    x : np.ndarray
        float32 model inputs, shape (rows, schema.num_encoded_features).
    rows : np.ndarray
        Their spreadsheet row numbers (header = 1).
    given_labels : pd.Series | None
        The label column's cells, when the file has one.
    ids : pd.DataFrame
        The identifier columns the schema declares (``ids``) that the file has, as written
        (no column: the file has none).
    """

    x: np.ndarray
    rows: np.ndarray
    given_labels: pd.Series | None
    ids: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)


def encode_new_patients(
    data_path: str | os.PathLike[str], preprocessing: CsvPreprocessing
) -> tuple[EncodedPatients | None, list[DataProblem]]:
    """Check and encode a file of new patients; (None, problems) when it fails the check."""
    schema = preprocessing.schema
    table, problems = read_table(data_path)
    if table is not None:
        problems += check_table(table, schema, require_label=False)
    if problems or table is None:
        return None, sort_problems(problems, schema)
    x = preprocessing.transform(parse_features(table.frame, schema))
    labels = table.frame.get(schema.label.name)
    ids = table.frame[[name for name in schema.ids if name in table.frame]]
    return EncodedPatients(x=x, rows=table.frame.index.to_numpy(), given_labels=labels,
                           ids=ids), []


def prediction_frame(outputs: np.ndarray, patients: EncodedPatients, schema: DataSchema
                     ) -> pd.DataFrame:
    """Build the predictions table: ``row``, the identifier columns (the schema's ``ids``
    the file has, as written), the given label, ``predicted``, probabilities.

    Binary: ``probability_<positive class>``; multiclass: ``probability_<class>`` for every
    class; numeric labels: the predicted value only.
    """
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(patients.rows), -1)
    frame = pd.DataFrame({ROW_COLUMN: patients.rows})
    for name in patients.ids.columns:
        frame[name] = patients.ids[name].to_numpy()
    label = schema.label
    if patients.given_labels is not None:
        frame[label.name] = patients.given_labels.to_numpy()
    if label.type == "numeric":
        frame[PREDICTED_COLUMN] = outputs[:, 0]
    elif label.type == "binary":
        positive = outputs[:, 0]
        frame[PREDICTED_COLUMN] = np.where(positive >= 0.5, label.classes[1], label.classes[0])
        frame[f"probability_{label.classes[1]}"] = positive
    else:
        frame[PREDICTED_COLUMN] = np.asarray(label.classes)[outputs.argmax(axis=1)]
        for index, name in enumerate(label.classes):
            frame[f"probability_{name}"] = outputs[:, index]
    return frame
