"""UCI Heart Disease: four real hospitals, preprocessed exactly as FLamby's Fed-Heart-Disease.

The raw UCI files are vendored as JSON lines (a file type Flower's app bundle keeps), with
their MD5 sums. Preprocessing (FLamby, NeurIPS 2022): ``?`` is missing; drop slope, ca, thal;
drop rows with any missing value (740 rows remain); label ``num > 0``; per hospital a 66/34
train/test split with random state 43, stratified where both classes have more than 2 rows;
one-hot ``cp`` and ``restecg`` dropping the first level (13 features). Then, unlike FLamby:

- a value of 0 in ``trestbps`` or ``chol`` means "not measured" (Switzerland records no
  cholesterol at all, VA a quarter of it): with the missing-value indicator (the default) it
  takes the column's public center and an indicator column says it is missing; without it the
  0 passes through as if it were a measurement, and the indicator columns stay 0 (15 features
  either way);
- every hospital scales with the same public constants (``REFERENCE``: adult clinical
  reference values, chosen without looking at the data; no epsilon), by default, or z-scores
  with its own training mean and std (the per-hospital setting, FLamby's; not covered by the
  privacy guarantee).
"""

import json
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from common.normalisation import PublicScaling, with_missing_indicators
from common.preprocessing import Standardizer
from common.tasks.base import HospitalData, TaskSpec
from common.tasks.split import split_digest

HOSPITALS = ("cleveland", "hungary", "switzerland", "va")
COLUMNS = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num",
)
DROPPED = ("slope", "ca", "thal")
ONE_HOT_LEVELS = {"cp": (1, 2, 3, 4), "restecg": (0, 1, 2)}
TEST_SIZE = 0.34
SPLIT_RANDOM_STATE = 43
NUMERIC = ("age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak")
MISSING_WHEN_ZERO = ("trestbps", "chol")  # a resting blood pressure or cholesterol of 0
# Public constants (center, scale): adult clinical reference values, not fitted on any data:
# age 50 +/- 10 years; resting blood pressure 130 +/- 20 mm Hg (hypertension from 140);
# serum cholesterol 220 +/- 50 mg/dl (desirable below 200, high from 240); maximum heart rate
# 150 +/- 25 bpm (220 - age at 70); ST depression 1 +/- 1 mm (significant from 1 mm). Binary
# and one-hot columns map {0, 1} to {-1, 1}; indicator columns stay {0, 1}.
REFERENCE = {"age": (50.0, 10.0), "trestbps": (130.0, 20.0), "chol": (220.0, 50.0),
             "thalach": (150.0, 25.0), "oldpeak": (1.0, 1.0)}
BINARY = (0.5, 0.5)


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


def feature_names() -> tuple[str, ...]:
    """The 15 model input columns: numeric, one-hot cp and restecg, then the indicators."""
    one_hot = tuple(f"{column}={level}" for column, levels in ONE_HOT_LEVELS.items()
                    for level in levels[1:])
    return (*NUMERIC, *one_hot, *(f"{column}_missing" for column in MISSING_WHEN_ZERO))


def public_scaling() -> PublicScaling:
    """The task's public constants, one per input column (``REFERENCE``, module docstring)."""
    names = feature_names()
    pairs = [REFERENCE.get(name, BINARY) if not name.endswith("_missing") else (0.0, 1.0)
             for name in names]
    return PublicScaling(names, tuple(c for c, _ in pairs), tuple(s for _, s in pairs),
                         "clinical reference values (common/tasks/heart_disease.py)")


def prepare(x: np.ndarray, *, missing_indicator: bool) -> np.ndarray:
    """Encoded rows (13 columns) with the two indicator columns appended (15 columns)."""
    columns = tuple(NUMERIC.index(name) for name in MISSING_WHEN_ZERO)
    missing = np.stack([x[:, c] == 0 for c in columns], axis=1)
    return with_missing_indicators(x, columns, missing, public_scaling().center,
                                   indicate=missing_indicator)


def load_hospitals(num_hospitals: int = 4, *, normalisation: str = "public",
                   missing_indicator: bool = True, **_: object) -> list[HospitalData]:
    """Return the first `num_hospitals` hospitals in the order cleveland, hungary, switzerland, va.

    The split is fixed by FLamby's protocol, so seed and partition settings do not apply.
    ``normalisation``: "public" (the task's constants) or "per-hospital" (each hospital's own
    training mean and std); ``missing_indicator``: see the module docstring.
    """
    if normalisation not in ("public", "per-hospital"):
        raise ValueError(f"normalisation must be 'public' or 'per-hospital', got "
                         f"{normalisation!r}")
    scaling = public_scaling()
    hospitals = []
    for name in HOSPITALS[:num_hospitals]:
        x_train, x_test, y_train, y_test = split_hospital(load_frame(name))
        digest = split_digest(x_train, y_train, x_test, y_test)
        x_train = prepare(x_train, missing_indicator=missing_indicator)
        x_test = prepare(x_test, missing_indicator=missing_indicator)
        if normalisation == "public":
            x_train, x_test = scaling.transform(x_train), scaling.transform(x_test)
        else:
            standardizer = Standardizer.fit(x_train)
            x_train, x_test = standardizer.transform(x_train), standardizer.transform(x_test)
        hospitals.append(HospitalData(name=name, x_train=x_train,
                                      y_train=y_train.astype(np.float32), x_test=x_test,
                                      y_test=y_test.astype(np.float32), split_digest=digest))
    return hospitals


TASK = TaskSpec(
    name="heart-disease",
    kind="binary",
    num_features=15,
    num_outputs=1,
    hidden_units=(),
    default_hospitals=len(HOSPITALS),
    load=load_hospitals,
    fixed_hospital_names=HOSPITALS,
    scaling=public_scaling,
    per_hospital_scaling=True,
)
