"""UCI Heart Disease: four real hospitals, preprocessed exactly as FLamby's Fed-Heart-Disease.

The raw UCI files are vendored as JSON lines (a file type Flower's app bundle keeps), with
their MD5 sums. Preprocessing (FLamby, NeurIPS 2022): ``?`` is missing; drop slope, ca, thal;
drop rows with any missing value (740 rows remain); label ``num > 0``; per hospital a 66/34
train/test split with random state 43, stratified where both classes have more than 2 rows;
one-hot ``cp`` and ``restecg`` dropping the first level (13 features); z-score each hospital
with its own training mean and std.
"""

import json
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from common.preprocessing import Standardizer
from common.tasks.base import HospitalData, TaskSpec

HOSPITALS = ("cleveland", "hungary", "switzerland", "va")
COLUMNS = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num",
)
DROPPED = ("slope", "ca", "thal")
ONE_HOT_LEVELS = {"cp": (1, 2, 3, 4), "restecg": (0, 1, 2)}
TEST_SIZE = 0.34
SPLIT_RANDOM_STATE = 43


@cache
def _raw_lines() -> dict[str, tuple[str, ...]]:
    text = resources.files("common.tasks").joinpath("data/heart_disease.json").read_text()
    hospitals = json.loads(text)["hospitals"]
    return {name: tuple(hospitals[name]["lines"]) for name in HOSPITALS}


def load_frame(hospital: str) -> pd.DataFrame:
    """Return one hospital's rows after dropping columns and incomplete rows (FLamby step 1).

    Columns: the 13 raw columns minus slope/ca/thal, then ``label`` (0/1) instead of ``num``.
    """
    rows = [line.split(",") for line in _raw_lines()[hospital]]
    frame = pd.DataFrame(rows, columns=list(COLUMNS)).replace("?", np.nan).astype(float)
    frame = frame.drop(columns=list(DROPPED)).dropna().reset_index(drop=True)
    frame["label"] = (frame.pop("num") > 0).astype(float)
    return frame


def encode_features(frame: pd.DataFrame) -> np.ndarray:
    """One-hot cp and restecg (first level dropped) after the numeric columns: 13 features."""
    numeric = [c for c in frame.columns if c not in ONE_HOT_LEVELS and c != "label"]
    parts = [frame[numeric].to_numpy(dtype=np.float64)]
    for column, levels in ONE_HOT_LEVELS.items():
        values = frame[column].to_numpy()
        parts.append(np.stack([values == level for level in levels[1:]], axis=1).astype(float))
    return np.concatenate(parts, axis=1)


def split_hospital(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split one hospital 66/34 (random state 43), stratified where both classes have > 2 rows."""
    x, y = encode_features(frame), frame["label"].to_numpy()
    counts = np.bincount(y.astype(int), minlength=2)
    stratify = y if counts.min() > 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_RANDOM_STATE, stratify=stratify
    )
    return x_train, x_test, y_train, y_test


def load_hospitals(num_hospitals: int = 4, **_: object) -> list[HospitalData]:
    """Return the first `num_hospitals` hospitals in the order cleveland, hungary, switzerland, va.

    The split is fixed by FLamby's protocol, so seed and partition settings do not apply.
    """
    hospitals = []
    for name in HOSPITALS[:num_hospitals]:
        x_train, x_test, y_train, y_test = split_hospital(load_frame(name))
        standardizer = Standardizer.fit(x_train)
        hospitals.append(
            HospitalData(
                name=name,
                x_train=standardizer.transform(x_train),
                y_train=y_train.astype(np.float32),
                x_test=standardizer.transform(x_test),
                y_test=y_test.astype(np.float32),
            )
        )
    return hospitals


TASK = TaskSpec(
    name="heart-disease",
    kind="binary",
    num_features=13,
    num_outputs=1,
    hidden_units=(),
    default_hospitals=len(HOSPITALS),
    load=load_hospitals,
    fixed_hospital_names=HOSPITALS,
)
