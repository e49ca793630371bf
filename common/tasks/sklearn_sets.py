"""Tasks on scikit-learn's bundled data sets (shipped with the package, nothing downloaded).

Each set is split into N hospitals (IID or Dirichlet(alpha) label skew, seeded); every hospital
holds out its own 25% test part. Diabetes scales with public constants (``DIABETES_REFERENCE``:
adult clinical reference values), or, as a setting, z-scores with each hospital's own training
statistics. Breast-cancer maps each feature's documented range (the min and max that
scikit-learn's description of the set publishes, as a consortium would agree value ranges in
its data schema) to [0, 1]: z-scoring each hospital on its own rows under label skew shifts
every hospital's features differently (client-average accuracy 0.71 against 0.88 with the
fixed ranges, 10 hospitals, Dirichlet 0.5). Digits keeps its fixed pixel scale 0..16 -> 0..1.

How many hospitals: every hospital keeps at least ``MIN_TRAIN_ROWS`` (7) training and
``MIN_TEST_ROWS`` (3) test rows, i.e. at least 10 rows before its 75/25 split. A task's
``max_hospitals`` is the most hospitals an IID split gives that many rows (rows // 10: digits
179, breast-cancer 56, diabetes 44). A Dirichlet draw that leaves a hospital short is drawn
again (up to 100 times); if none fits, the split is refused, naming the short hospitals.
"""

from collections.abc import Callable
from functools import cache, partial

import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split

from common.normalisation import PublicScaling, from_ranges
from common.partitioning import (
    PartitionError,
    dirichlet_partition,
    iid_partition,
    max_parts,
    min_rows_for_split,
)
from common.preprocessing import Standardizer
from common.tasks.base import HospitalData, TaskKind, TaskSpec
from common.tasks.split import split_digest

TEST_FRACTION = 0.25
REGRESSION_BINS = 5  # diabetes targets are binned into quantiles for the Dirichlet split
MIN_TRAIN_ROWS = 7  # per hospital, after its own train/test split
MIN_TEST_ROWS = 3
MIN_ROWS_PER_HOSPITAL = min_rows_for_split(MIN_TRAIN_ROWS, MIN_TEST_ROWS, TEST_FRACTION)  # 10
SHORT_HOSPITALS_NAMED = 5  # a refused Dirichlet split names at most this many short hospitals
# Diabetes' public constants (center, scale), adult clinical reference values, not fitted on
# the data: age 50 +/- 15 years; sex coded 1/2; BMI 26 +/- 4 kg/m2; mean arterial pressure
# 95 +/- 14 mm Hg; total cholesterol 190 +/- 35, LDL 115 +/- 30, HDL 50 +/- 13 mg/dl; total/HDL
# ratio 4 +/- 1.3; log triglycerides 4.6 +/- 0.5 (ln mg/dl); fasting glucose 90 +/- 11 mg/dl.
DIABETES_REFERENCE = (("age", 50.0, 15.0), ("sex", 1.5, 0.5), ("bmi", 26.0, 4.0),
                      ("bp", 95.0, 14.0), ("tc", 190.0, 35.0), ("ldl", 115.0, 30.0),
                      ("hdl", 50.0, 13.0), ("tch", 4.0, 1.3), ("ltg", 4.6, 0.5),
                      ("glu", 90.0, 11.0))


@cache
def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = datasets.load_breast_cancer(return_X_y=True)
    low, high = x.min(axis=0), x.max(axis=0)  # the ranges the set's description publishes
    return (x - low) / (high - low), y.astype(np.float32)


@cache
def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y = datasets.load_diabetes(return_X_y=True, scaled=False)
    return x, y.astype(np.float32)


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = datasets.load_digits(return_X_y=True)
    return x / 16.0, y.astype(np.float32)


def _split_labels(kind: TaskKind, y: np.ndarray) -> np.ndarray:
    if kind != "regression":
        return y.astype(int)
    edges = np.quantile(y, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1])
    return np.asarray(np.digitize(y, edges), dtype=np.intp)


def split_capacity(load_xy: Callable[[], tuple[np.ndarray, np.ndarray]]) -> int:
    """The most hospitals the data set can be split into, each keeping its minimum of rows."""
    return max_parts(len(load_xy()[1]), MIN_ROWS_PER_HOSPITAL)


def _rule() -> str:
    return f">= {MIN_TRAIN_ROWS} training and >= {MIN_TEST_ROWS} test rows"


def _partition(name: str, kind: TaskKind, y: np.ndarray, num_hospitals: int, *, seed: int,
               partition: str, alpha: float) -> list[np.ndarray]:
    """Each hospital's row positions; ValueError naming the task (and short hospitals)."""
    capacity = max_parts(len(y), MIN_ROWS_PER_HOSPITAL)
    if not 1 <= num_hospitals <= capacity:
        raise ValueError(
            f"hospitals must be between 1 and {capacity} for task {name!r} (its {len(y)} rows "
            f"give each hospital {_rule()}), got {num_hospitals}")
    rng = np.random.default_rng(seed)
    if partition == "iid":
        return iid_partition(len(y), num_hospitals, rng=rng,
                             min_rows_per_part=MIN_ROWS_PER_HOSPITAL)
    if partition != "dirichlet":
        raise ValueError(f"partition must be 'iid' or 'dirichlet', got {partition!r}")
    try:
        return dirichlet_partition(_split_labels(kind, y), num_hospitals, alpha=alpha, rng=rng,
                                   min_rows_per_part=MIN_ROWS_PER_HOSPITAL)
    except PartitionError as error:
        short = sorted(error.short_parts.items())
        named = ", ".join(f"hospital-{i} has {rows}" for i, rows in short[:SHORT_HOSPITALS_NAMED])
        more = ", ..." if len(short) > SHORT_HOSPITALS_NAMED else ""
        raise ValueError(
            f"task {name!r}: no Dirichlet split (dirichlet-alpha={alpha:g}, seed={seed}) of its "
            f"{len(y)} rows into {num_hospitals} hospitals gives each at least "
            f"{MIN_ROWS_PER_HOSPITAL} rows ({_rule()}); the closest draw left {len(short)} "
            f"hospital(s) short ({named}{more}); use fewer hospitals, a larger "
            "dirichlet-alpha or partition 'iid'"
        ) from None


def diabetes_scaling() -> PublicScaling:
    """Diabetes' public constants (``DIABETES_REFERENCE``)."""
    return PublicScaling(tuple(n for n, _, _ in DIABETES_REFERENCE),
                         tuple(c for _, c, _ in DIABETES_REFERENCE),
                         tuple(s for _, _, s in DIABETES_REFERENCE),
                         "clinical reference values (common/tasks/sklearn_sets.py)")


def unit_scaling(columns: int, source: str) -> PublicScaling:
    """The identity on columns already scaled by a fixed public map (their loader's)."""
    return from_ranges(tuple(f"x{i}" for i in range(columns)), ((0.0, 1.0),) * columns, source)


def make_loader(
    name: str, load_xy: Callable[[], tuple[np.ndarray, np.ndarray]], kind: TaskKind, *,
    scaling: Callable[[], PublicScaling] | None = None,
) -> Callable[..., list[HospitalData]]:
    """Return ``load(num_hospitals, *, seed, partition, alpha, normalisation)`` for one set.

    ``scaling``: the public constants applied to ``load_xy``'s rows (None: they come scaled by
    a fixed public map already). ``normalisation`` "per-hospital" z-scores each hospital with
    its own training statistics instead (only where ``scaling`` is given). The loader raises
    ValueError, naming the task, when `num_hospitals` is above the task's capacity, the
    partition is unknown, or no Dirichlet draw keeps every hospital's minimum (naming the
    short hospitals).
    """

    def load(
        num_hospitals: int, *, seed: int = 0, partition: str = "iid", alpha: float = 0.5,
        normalisation: str = "public", **_: object,
    ) -> list[HospitalData]:
        if normalisation not in ("public", "per-hospital") or (
                normalisation == "per-hospital" and scaling is None):
            raise ValueError(f"task {name!r}: normalisation must be 'public'"
                             + (" or 'per-hospital'" if scaling is not None else
                                " (its features have a fixed public scale)")
                             + f", got {normalisation!r}")
        x, y = load_xy()
        parts = _partition(name, kind, y, num_hospitals, seed=seed, partition=partition,
                           alpha=alpha)
        hospitals = []
        for index, rows in enumerate(parts):
            x_train, x_test, y_train, y_test = train_test_split(
                x[rows], y[rows], test_size=TEST_FRACTION, random_state=seed + index
            )
            digest = split_digest(x_train, y_train, x_test, y_test)
            if normalisation == "per-hospital":
                standardizer = Standardizer.fit(x_train)
                x_train, x_test = standardizer.transform(x_train), standardizer.transform(x_test)
            elif scaling is not None:
                x_train, x_test = scaling().transform(x_train), scaling().transform(x_test)
            hospitals.append(
                HospitalData(
                    name=f"hospital-{index}",
                    x_train=np.asarray(x_train, dtype=np.float32),
                    y_train=y_train,
                    x_test=np.asarray(x_test, dtype=np.float32),
                    y_test=y_test,
                    split_digest=digest,
                )
            )
        return hospitals

    return load


BREAST_CANCER = TaskSpec(
    name="breast-cancer", kind="binary", num_features=30, num_outputs=1, hidden_units=(16,),
    default_hospitals=10, capacity=partial(split_capacity, _breast_cancer),
    load=make_loader("breast-cancer", _breast_cancer, "binary"),
    scaling=partial(unit_scaling, 30, "the set's published feature ranges"),
)
DIABETES = TaskSpec(
    name="diabetes", kind="regression", num_features=10, num_outputs=1, hidden_units=(32,),
    default_hospitals=4, capacity=partial(split_capacity, _diabetes),
    load=make_loader("diabetes", _diabetes, "regression", scaling=diabetes_scaling),
    target_scale=80.0, target_offset=150.0, scaling=diabetes_scaling, per_hospital_scaling=True,
)
DIGITS = TaskSpec(
    name="digits", kind="multiclass", num_features=64, num_outputs=10, hidden_units=(64, 64),
    default_hospitals=10, capacity=partial(split_capacity, _digits),
    load=make_loader("digits", _digits, "multiclass"),
    scaling=partial(unit_scaling, 64, "the fixed pixel scale 0..16"),
)
# The same records and hospitals as digits (same split under the same seed), each row read as
# its 8x8 image by a small CNN (common.models) instead of the MLP.
DIGITS_CNN = TaskSpec(
    name="digits-cnn", kind="multiclass", num_features=64, num_outputs=10, hidden_units=(),
    default_hospitals=10, capacity=partial(split_capacity, _digits),
    load=make_loader("digits-cnn", _digits, "multiclass"),
    architecture="cnn", image_shape=(8, 8, 1),
    scaling=partial(unit_scaling, 64, "the fixed pixel scale 0..16"),
)
