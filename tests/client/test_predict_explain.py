"""``fedcare predict --explain``: attributions beside each prediction, at the hospital.

Done when (issue 25, item 1): on heart-disease (the logistic model) each row's attributions
sum to the logit difference from the public baseline within 1e-4; on a csv hospital (an MLP,
integrated gradients) within 0.05 |difference| + 1e-3; names are the schema's or task's, and
values are shown in original units.
"""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from client.explanation_output import builtin_patients, view_for_csv
from client.prediction import encode_new_patients
from common.models import build_model
from common.schema import DataSchema
from common.tasks import get_task
from common.tasks.csv_preprocessing import CsvPreprocessing
from common.tasks.csv_task import (
    EXAMPLE_SCHEMA,
    csv_task_spec,
    load_csv_hospital,
    write_example_hospitals,
)
from common.tasks.heart_disease import feature_names
from simulations.cli.main import app


def _attributions(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if c.startswith("attribution_")]]


def _fit(model, x, y, epochs=8):
    keras.utils.set_random_seed(0)  # fit shuffles: seeded (op determinism may be on)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=False)


def test_heart_disease_logistic_explanations_are_exact_in_logit_space(tmp_path):
    task = get_task("heart-disease")
    x, y, _ = builtin_patients("heart-disease", "cleveland")
    model = build_model(task, seed=0)
    _fit(model, x, y)
    model.save(tmp_path / "model.keras")
    out = tmp_path / "explained.csv"

    done = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "model.keras"),
                                    "--data", "heart-disease:cleveland", "--explain",
                                    "--out", str(out)])

    assert done.exit_code == 0, done.output
    frame = pd.read_csv(out)
    assert list(_attributions(frame).columns) == [f"attribution_{n}" for n in feature_names()]
    p = frame["output_0"].to_numpy()
    logit = np.log(p) - np.log1p(-p)
    np.testing.assert_allclose(frame["explained_output"], logit, atol=1e-3)
    difference = frame["explained_output"] - frame["baseline_output"]
    assert np.abs(difference).max() > 0.1
    assert np.abs(_attributions(frame).sum(axis=1) - difference).max() <= 1e-4
    # Original units: age in years against the public baseline of 50 years.
    shown = " ".join(frame["pushed_up"].fillna("").tolist() + frame["pushed_down"].fillna(
        "").tolist())
    assert "years (baseline 50)" in shown
    ages = [float(part.split("=")[1].split(" ")[0]) for part in shown.split("; ")
            if part.startswith("age=")]
    assert ages and all(25 <= a <= 80 for a in ages)


@pytest.fixture(scope="module")
def csv_hospital(tmp_path_factory):
    directory = tmp_path_factory.mktemp("explain")
    _, paths = write_example_hospitals(directory, 1)
    schema_path = directory / "schema.json"
    schema_path.write_text(json.dumps(EXAMPLE_SCHEMA))
    schema = DataSchema.load(schema_path)
    hospital = load_csv_hospital(paths[0], schema, name="hospital-0")
    preprocessing = directory / "hospital-0.preprocessing.json"
    hospital.preprocessing.save(preprocessing)
    model = build_model(csv_task_spec(schema), seed=1)
    _fit(model, hospital.data.x_train, hospital.data.y_train)
    model.save(directory / "model.keras")
    return {"data": paths[0], "schema": schema_path, "preprocessing": preprocessing,
            "model": directory / "model.keras", "fitted": hospital.preprocessing}


def test_csv_hospital_integrated_gradients_are_complete_and_named_by_the_schema(
        csv_hospital, tmp_path):
    frame = pd.read_csv(csv_hospital["data"])
    new = tmp_path / "new.csv"
    frame.drop(columns=DataSchema.load(csv_hospital["schema"]).label.name).head(30).to_csv(
        new, index=False)
    out = tmp_path / "explained.csv"

    done = CliRunner().invoke(app, [str(a) for a in (
        "predict", "--model", csv_hospital["model"], "--data", new, "--preprocessing",
        csv_hospital["preprocessing"], "--explain", "--out", out)])

    assert done.exit_code == 0, done.output
    explained = pd.read_csv(out)
    schema = DataSchema.load(csv_hospital["schema"])
    assert list(_attributions(explained).columns) == [
        f"attribution_{n}" for n in schema.encoded_feature_names]
    assert explained["explained"].str.contains("integrated-gradients").all()
    difference = explained["explained_output"] - explained["baseline_output"]
    gap = np.abs(_attributions(explained).sum(axis=1) - difference)
    assert np.abs(difference).max() > 0.05
    assert (gap <= 0.05 * np.abs(difference) + 1e-3).all(), gap.max()


def test_csv_values_are_shown_in_the_files_own_units(csv_hospital):
    fitted: CsvPreprocessing = csv_hospital["fitted"]
    view = view_for_csv(fitted)
    patients, problems = encode_new_patients(csv_hospital["data"], fitted)
    assert not problems
    frame = pd.read_csv(csv_hospital["data"])
    for feature in (f for f in fitted.schema.features if f.type == "numeric"):
        column = list(view.names).index(feature.name)
        written = frame[feature.name].to_numpy(dtype=float)
        measured = ~np.isnan(written)
        np.testing.assert_allclose(view.original(patients.x)[measured, column],
                                   written[measured], rtol=1e-4, atol=1e-3)
        assert view.baseline[column] == feature.range[0]  # the public center: the range's low


def test_an_unknown_builtin_hospital_is_refused_by_name(tmp_path):
    build_model(get_task("heart-disease"), seed=0).save(tmp_path / "model.keras")
    done = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "model.keras"),
                                    "--data", "heart-disease:nowhere", "--explain"])
    assert done.exit_code == 2
    assert "--hospital 'nowhere' is not one of heart-disease's hospitals" in done.output
