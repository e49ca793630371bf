"""Identifier columns (the schema's ``ids``): allowed in a hospital's files, never used for
training, and copied beside each prediction by ``fedcare predict``.
"""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from common.data_validation import validate_csv
from common.models import build_model
from common.schema import DataSchema, SchemaError
from common.tasks.csv_task import (
    EXAMPLE_SCHEMA,
    csv_task_spec,
    load_csv_hospital,
    write_example_hospitals,
)
from simulations.cli.main import app


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    """A schema declaring ``patient_id``, a training file that has it, the fitted files."""
    directory = tmp_path_factory.mktemp("ids")
    _, paths = write_example_hospitals(directory, 1)
    frame = pd.read_csv(paths[0])
    frame.insert(0, "patient_id", [f"P{n:05d}" for n in range(len(frame))])
    data = directory / "with-ids.csv"
    frame.to_csv(data, index=False)
    schema_path = directory / "schema.json"
    schema_path.write_text(json.dumps({**EXAMPLE_SCHEMA, "ids": ["patient_id"]}))
    schema = DataSchema.load(schema_path)
    preprocessing = directory / "hospital-0.preprocessing.json"
    load_csv_hospital(data, schema, name="hospital-0").preprocessing.save(preprocessing)
    model = directory / "model.keras"
    build_model(csv_task_spec(schema), seed=1).save(model)
    return {"data": data, "schema": schema_path, "preprocessing": preprocessing,
            "model": model, "frame": frame}


def test_a_schema_without_ids_keeps_its_hash_and_ids_are_hashed_when_declared():
    plain = DataSchema.from_dict(EXAMPLE_SCHEMA)
    with_ids = DataSchema.from_dict({**EXAMPLE_SCHEMA, "ids": ["patient_id"]})

    assert "ids" not in plain.to_dict()
    assert DataSchema.from_dict({**EXAMPLE_SCHEMA, "ids": []}).sha256 == plain.sha256
    assert with_ids.sha256 != plain.sha256 and with_ids.ids == ("patient_id",)
    assert DataSchema.from_dict(with_ids.to_dict()) == with_ids


@pytest.mark.parametrize(("ids", "message"), [
    ("patient_id", "ids must be a list of column names"),
    ([" patient_id"], "ids must be a list of column names"),
    (["age"], "column names must be unique; repeated: ['age']"),
], ids=["not-a-list", "spaces", "a-feature"])
def test_bad_ids_are_refused_naming_the_key(ids, message):
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DataSchema.from_dict({**EXAMPLE_SCHEMA, "ids": ids})


def test_an_id_column_passes_the_check_only_when_declared(hospital, tmp_path):
    assert validate_csv(hospital["data"], DataSchema.load(hospital["schema"])) == []

    problems = validate_csv(hospital["data"], DataSchema.from_dict(EXAMPLE_SCHEMA))

    assert [(p.column, p.detail) for p in problems] == [("patient_id", "not in the schema")]


def test_predict_writes_each_patients_identifier_beside_its_prediction(hospital, tmp_path):
    patients = hospital["frame"].drop(columns="heart_disease").sample(25, random_state=3)
    new = tmp_path / "new.csv"
    patients.to_csv(new, index=False)
    out = tmp_path / "predictions.csv"

    done = CliRunner().invoke(app, [str(a) for a in (
        "predict", "--model", hospital["model"], "--data", new, "--preprocessing",
        hospital["preprocessing"], "--schema", hospital["schema"], "--out", out)])

    assert done.exit_code == 0, done.output
    predictions = pd.read_csv(out)
    assert list(predictions.columns) == ["row", "patient_id", "predicted", "probability_1"]
    assert predictions["patient_id"].tolist() == patients["patient_id"].tolist()
    assert predictions["row"].tolist() == list(range(2, 27))
