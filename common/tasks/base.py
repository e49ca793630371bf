"""The task contract: every task exposes its hospitals' data, a model builder and its metrics.

A task is data + model + metric. Each hospital's data is already split into its own train and
test parts and normalised, by default with the task's public constants
(``common.normalisation``: the same for every hospital, no epsilon), or with statistics of its
own training part only (the per-hospital setting).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from common.normalisation import PublicScaling

TaskKind = Literal["binary", "multiclass", "regression"]
Architecture = Literal["mlp", "cnn"]  # common.models builds one per name

CSV_TASK_NAME = "csv"  # the task built from a consortium's schema file (common.tasks.csv_task)
CLASSIFICATION_METRICS = ("accuracy", "auc")
REGRESSION_METRICS = ("mae", "r2")


@dataclass(frozen=True, slots=True)
class HospitalData:
    """One hospital's private data, preprocessed on its own training statistics.

    Attributes
    ----------
    name : str
        The hospital's name (e.g. ``"cleveland"`` or ``"hospital-3"``).
    x_train, x_test : np.ndarray
        float32 features, shape (rows, features).
    y_train, y_test : np.ndarray
        float32 labels, shape (rows,): 0/1 for binary, class index for multiclass, the target
        value for regression.
    split_digest : str
        SHA-256 (hex) of which raw rows are test rows (``common.tasks.split``); the hospital's
        ledger pins it ("" where the loader computes none).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    split_digest: str = ""

    @property
    def num_train(self) -> int:
        """Number of training rows."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test rows."""
        return int(self.x_test.shape[0])


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a task is: its kind, model shape and how to load its hospitals.

    Attributes
    ----------
    name : str
        The task's command-line name.
    kind : TaskKind
        Binary or multiclass classification, or regression.
    num_features : int
        Width of every hospital's feature matrix.
    num_outputs : int
        Model output units: 1 for binary and regression, the class count for multiclass.
    hidden_units : tuple[int, ...]
        Hidden Dense layers of the model; empty for logistic/linear regression.
    default_hospitals : int
        Hospitals used when the run does not say.
    load : Callable[..., list[HospitalData]]
        ``load(num_hospitals, *, seed, partition, alpha, normalisation, missing_indicator)``
        -> the hospitals, in order (``normalisation``: "public" or "per-hospital";
        ``missing_indicator``: whether missing values get their indicator columns).
    target_scale, target_offset : float
        Regression only: the model predicts ``offset + scale * h`` (a fixed Rescaling layer),
        and the training loss is the MSE divided by ``scale**2``, so gradients are O(1).
    fixed_hospital_names : tuple[str, ...]
        Real hospitals' names, in order; empty for split tasks (``hospital-0``, ...).
    capacity : Callable[[], int] | None
        Split tasks: ``capacity()`` -> the most hospitals its data can be split into (from
        its row count and the rows each hospital keeps); None for tasks not split here.
    architecture : Architecture
        "mlp" (the Dense layers of ``hidden_units``) or "cnn" (convolutions over each row
        read as an image of ``image_shape``; ``common.models`` says which layers).
    image_shape : tuple[int, ...]
        "cnn" only: (height, width, channels), whose product is ``num_features``.
    scaling : Callable[[], PublicScaling] | None
        The task's public normalisation constants (``common.normalisation``), whose digest
        every hospital checks; None for task csv (its schema declares them).
    per_hospital_scaling : bool
        Whether per-hospital z-scoring is available as a setting (tasks whose features have
        no fixed scale of their own).
    """

    name: str
    kind: TaskKind
    num_features: int
    num_outputs: int
    hidden_units: tuple[int, ...]
    default_hospitals: int
    load: Callable[..., list[HospitalData]]
    target_scale: float = 1.0
    target_offset: float = 0.0
    fixed_hospital_names: tuple[str, ...] = ()
    capacity: Callable[[], int] | None = None
    architecture: Architecture = "mlp"
    image_shape: tuple[int, ...] = ()
    scaling: "Callable[[], PublicScaling] | None" = None
    per_hospital_scaling: bool = False

    @property
    def max_hospitals(self) -> int | None:
        """The most hospitals the task takes: its real hospitals, or what its data can feed.

        None when the task sets no bound (task csv: each hospital brings its own file).
        """
        if self.fixed_hospital_names:
            return len(self.fixed_hospital_names)
        return self.capacity() if self.capacity is not None else None

    def hospital_names(self, num_hospitals: int) -> list[str]:
        """Names of the first `num_hospitals` hospitals, as metrics.csv spells them."""
        if self.fixed_hospital_names:
            return list(self.fixed_hospital_names[:num_hospitals])
        return [f"hospital-{index}" for index in range(num_hospitals)]

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The task's reported metrics, in metrics.csv order."""
        return REGRESSION_METRICS if self.kind == "regression" else CLASSIFICATION_METRICS
