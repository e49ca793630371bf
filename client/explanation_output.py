"""Why the model predicts what it does for each patient: attributions beside each prediction.

At the hospital only: nothing here is sent or charged. Each prediction's explained output (a
binary model's logit, the predicted class's logit, a regression's value) is attributed to
the model's input columns against a public baseline (``common.explain.attribution``: exact for
the logistic model, integrated gradients for the MLPs), and shown in the schema's (or task's)
feature names and original units: the normalisation is undone for every value shown.

The baseline is the shared normalisation's public constants (``common.normalisation``): each
column's public center (a task's clinical reference value, a schema range's low end; 0 for
one-hot and indicator columns). A hospital that scales with its own statistics
(``per-hospital``) still gets the public baseline, mapped through its own scaling.
"""

from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from common.explain.attribution import Attributions, attribute
from common.normalisation import PublicScaling
from common.tasks.csv_preprocessing import CsvPreprocessing
from common.tasks.csv_task import schema_scaling

TOP_FEATURES = 3  # features listed per direction in the pushed-up/-down columns
# The built-in heart-disease task's units (its REFERENCE constants' units).
HEART_DISEASE_UNITS = {"age": "years", "trestbps": "mm Hg", "chol": "mg/dl", "thalach": "bpm",
                       "oldpeak": "mm"}


@dataclass(frozen=True, slots=True)
class FeatureView:
    """How model inputs read in original units, and the public baseline in those units.

    Attributes
    ----------
    names : tuple of str
        The model input columns' names (the schema's encoded names, or the task's).
    center, scale : np.ndarray
        float64, shape (features,): original value = input * scale + center (the scaling the
        hospital applied).
    baseline : np.ndarray
        float64, shape (features,): the public baseline in original units.
    units : tuple of str
        Per column, its unit ("" where none is declared).
    """

    names: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    baseline: np.ndarray
    units: tuple[str, ...]

    def original(self, x: np.ndarray) -> np.ndarray:
        """Model inputs (rows, features) back in original units."""
        return np.asarray(np.asarray(x, dtype=np.float64) * self.scale + self.center)

    @property
    def baseline_input(self) -> np.ndarray:
        """The baseline as a model input row, shape (features,)."""
        return np.asarray((self.baseline - self.center) / self.scale)


def view_for_scaling(scaling: PublicScaling, units: dict[str, str] | None = None
                     ) -> FeatureView:
    """A built-in task under its public normalisation: inputs are (x - center) / scale."""
    center = np.asarray(scaling.center, dtype=np.float64)
    return FeatureView(scaling.names, center, np.asarray(scaling.scale, dtype=np.float64),
                       center.copy(), tuple((units or {}).get(n, "") for n in scaling.names))


def view_for_csv(preprocessing: CsvPreprocessing) -> FeatureView:
    """A csv hospital: its own saved scaling, the schema's public centers as the baseline.

    Raises
    ------
    ValueError
        If a numeric feature declares no public ``range`` (no public baseline exists).
    """
    public = schema_scaling(preprocessing.schema)  # ValueError naming the unranged features
    names = preprocessing.schema.encoded_feature_names
    center = np.zeros(len(names))
    scale = np.ones(len(names))
    for index, name in enumerate(names):
        if name in preprocessing.numeric:
            center[index], scale[index] = preprocessing.numeric[name]
    return FeatureView(names, center, scale, np.asarray(public.center, dtype=np.float64),
                       ("",) * len(names))


def _describe(view: FeatureView, values: np.ndarray, row: np.ndarray, order: np.ndarray) -> str:
    parts = []
    for j in order:
        unit = f" {view.units[j]}" if view.units[j] else ""
        parts.append(f"{view.names[j]}={values[j]:.4g}{unit} (baseline "
                     f"{view.baseline[j]:.4g}): {row[j]:+.3f}")
    return "; ".join(parts)


def explanation_columns(model: keras.Model, x: np.ndarray, view: FeatureView, *,
                        top: int = TOP_FEATURES) -> tuple[pd.DataFrame, Attributions]:
    """The columns written beside each prediction, and the attributions behind them.

    Columns: ``explained`` (what is attributed), ``explained_output`` and
    ``baseline_output`` (its value at the patient and at the public baseline),
    ``pushed_up`` and ``pushed_down`` (the ``top`` features with the largest positive and
    negative attributions, each with its value and the baseline's in original units), then
    ``attribution_<feature>`` for every input column. Each row's attributions sum to
    explained_output - baseline_output (exactly for the logistic model; within 5% + 1e-3 for
    integrated gradients).
    """
    result = attribute(model, x, view.baseline_input)
    original = view.original(x)
    regression = any(layer.name == "target_units" for layer in model.layers)
    what = ("value in the target's units" if regression else
            "logit" if int(model.output_shape[-1]) == 1 else "logit of the predicted class")
    up, down = [], []
    for values, row in zip(original, result.values, strict=True):
        order = np.argsort(-row, kind="stable")
        up.append(_describe(view, values, row, np.asarray([j for j in order[:top] if row[j] > 0])))
        down.append(_describe(view, values, row,
                              np.asarray([j for j in order[::-1][:top] if row[j] < 0])))
    frame = pd.DataFrame({"explained": f"{what} ({result.method}, public baseline)",
                          "explained_output": result.output,
                          "baseline_output": result.baseline_output,
                          "pushed_up": up, "pushed_down": down})
    attributions = pd.DataFrame(result.values, columns=[f"attribution_{n}" for n in view.names])
    return pd.concat([frame, attributions], axis=1), result


def with_explanation(frame: pd.DataFrame, model: keras.Model, x: np.ndarray,
                     view: FeatureView) -> pd.DataFrame:
    """The predictions table with ``explanation_columns`` appended (same rows, same order)."""
    columns, _ = explanation_columns(model, x, view)
    return pd.concat([frame.reset_index(drop=True), columns], axis=1)


def builtin_patients(task_name: str, hospital: str) -> tuple[np.ndarray, np.ndarray, FeatureView]:
    """A built-in task's hospital's test rows (model inputs), labels and feature view.

    The research data sets are preprocessed inside fedcare under the public normalisation,
    exactly as a run's hospitals do by default.

    Raises
    ------
    ValueError
        For an unknown task, a task without public constants, or an unknown hospital (naming
        the known ones).
    """
    from common.tasks import get_task

    try:
        task = get_task(task_name)
    except (KeyError, ValueError) as error:
        raise ValueError(f"--task {task_name!r}: {error}") from None
    if task.scaling is None:
        raise ValueError(f"--task {task_name!r} has no public normalisation to explain against")
    names = task.hospital_names(task.default_hospitals)
    if hospital not in names:
        raise ValueError(f"--hospital {hospital!r} is not one of {task_name}'s hospitals: "
                         f"{', '.join(names)}")
    data = task.load(task.default_hospitals, seed=0, partition="iid", alpha=0.5,
                     normalisation="public", missing_indicator=True)[names.index(hospital)]
    units = HEART_DISEASE_UNITS if task_name == "heart-disease" else {}
    return data.x_test, data.y_test, view_for_scaling(task.scaling(), units)


def predict_builtin(model_path: object, source: tuple[str, str], *, explain: bool
                    ) -> pd.DataFrame:
    """Predictions (and with ``explain`` their attributions) for a built-in hospital's test rows.

    Columns: ``row`` (the test row's index), ``label``, ``predicted`` (binary: the positive
    probability's class 0/1; multiclass: the class; regression: the value), the model's
    output per column (``output_<k>``), then ``explanation_columns``.

    Raises
    ------
    ValueError
        An unknown task or hospital, an unloadable model, or a model of another width.
    """
    x, y, view = builtin_patients(*source)
    try:
        network = keras.saving.load_model(str(model_path))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load model {model_path}: {error}") from None
    if int(network.input_shape[-1]) != x.shape[1]:
        raise ValueError(f"model {model_path} takes {network.input_shape[-1]} inputs, but "
                         f"{source[0]} has {x.shape[1]}: was it trained on this task?")
    outputs = np.asarray(network.predict(x, verbose=0), dtype=np.float64).reshape(len(x), -1)
    predicted = (outputs[:, 0] >= 0.5).astype(int) if outputs.shape[1] == 1 and not any(
        layer.name == "target_units" for layer in network.layers) else (
        outputs.argmax(axis=1) if outputs.shape[1] > 1 else outputs[:, 0])
    frame = pd.DataFrame({"row": np.arange(len(x)), "label": y, "predicted": predicted})
    for k in range(outputs.shape[1]):
        frame[f"output_{k}"] = outputs[:, k]
    return with_explanation(frame, network, x, view) if explain else frame
