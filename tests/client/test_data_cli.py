import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from common.models import build_model
from common.schema import DataSchema
from common.tasks.csv_task import (
    EXAMPLE_SCHEMA,
    csv_task_spec,
    load_csv_hospital,
    write_example_hospitals,
)
from simulations.cli.main import app


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    schema_path, paths = write_example_hospitals(directory, 1)
    return directory, schema_path, paths[0]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_validate_data_accepts_a_good_file_with_a_summary_and_the_hash(example):
    _, schema_path, data = example
    result = _invoke("validate-data", "--schema", schema_path, data)
    assert result.exit_code == 0
    assert "303 data rows" in result.output
    assert DataSchema.load(schema_path).sha256 in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_validate_data_lists_every_bad_row_and_column_and_exits_1(example, tmp_path):
    # Arrange
    _, schema_path, data = example
    lines = data.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ","          # row 2: missing label
    lines[2] = "abc" + lines[2][2:]                      # row 3: non-numeric age
    lines[3] = lines[3].replace(",4,", ",9,", 1)         # row 4: unknown cp
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")

    # Act
    result = _invoke("validate-data", "--schema", schema_path, bad)

    # Assert
    assert result.exit_code == 1
    assert "row 2, column heart_disease: missing label" in result.output
    assert "row 3, column age: non-numeric value 'abc'" in result.output
    assert "row 4, column cp: unknown category '9'" in result.output
    assert "3 problems" in result.output


def test_validate_data_exits_2_for_an_unusable_schema(example, tmp_path):
    _, _, data = example
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({**EXAMPLE_SCHEMA, "label": {"name": "y", "type": "ordinal"}}))
    result = _invoke("validate-data", "--schema", schema, data)
    assert result.exit_code == 2 and "type must be one of" in result.output


@pytest.fixture(scope="module")
def trained(example):
    directory, schema_path, data = example
    schema = DataSchema.load(schema_path)
    preprocessing = directory / "hospital-0.preprocessing.json"
    load_csv_hospital(data, schema, name="hospital-0").preprocessing.save(preprocessing)
    model = build_model(csv_task_spec(schema), seed=1)
    model_path = directory / "model.keras"
    model.save(model_path)
    return model_path, preprocessing


def test_predict_writes_probabilities_with_the_hospitals_own_scaling(example, trained, tmp_path):
    # Arrange: new patients without a label; the same first patient alone in another file
    _, schema_path, data = example
    model_path, preprocessing = trained
    patients = pd.read_csv(data).drop(columns="heart_disease").head(30)
    many, one = tmp_path / "many.csv", tmp_path / "one.csv"
    patients.to_csv(many, index=False)
    patients.head(1).to_csv(one, index=False)

    # Act
    results = []
    for source in (many, one):
        out = tmp_path / f"pred-{source.stem}.csv"
        result = _invoke("predict", "--model", model_path, "--data", source,
                         "--preprocessing", preprocessing, "--schema", schema_path, "--out", out)
        assert result.exit_code == 0, result.output
        results.append(pd.read_csv(out))

    # Assert: scaled with the saved training statistics, not the new file's own
    full, single = results
    assert list(full.columns) == ["row", "predicted", "probability_1"]
    assert full["row"].tolist() == list(range(2, 32))
    assert single["probability_1"][0] == pytest.approx(full["probability_1"][0], abs=1e-6)
    assert full["probability_1"].between(0, 1).all() and full["probability_1"].nunique() > 1
    assert (full["predicted"] == (full["probability_1"] >= 0.5).astype(int)).all()


def test_predict_copies_a_given_label(example, trained, tmp_path):
    _, _, data = example
    model_path, preprocessing = trained
    out = tmp_path / "p.csv"
    result = _invoke("predict", "--model", model_path, "--data", data,
                     "--preprocessing", preprocessing, "--out", out)
    assert result.exit_code == 0
    assert np.array_equal(pd.read_csv(out)["heart_disease"], pd.read_csv(data)["heart_disease"])


def test_predict_lists_bad_rows_and_exits_1(example, trained, tmp_path):
    _, _, data = example
    model_path, preprocessing = trained
    bad = tmp_path / "bad.csv"
    bad.write_text(data.read_text().splitlines()[0] + "\n63,1,1,145,233,1,2,150,0,high,0\n")
    result = _invoke("predict", "--model", model_path, "--data", bad,
                     "--preprocessing", preprocessing)
    assert result.exit_code == 1
    assert "row 2, column oldpeak: non-numeric value 'high'" in result.output


def test_predict_refuses_a_schema_other_than_the_trained_one(example, trained, tmp_path):
    _, _, data = example
    model_path, preprocessing = trained
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**EXAMPLE_SCHEMA, "min_rows": 50}))
    result = _invoke("predict", "--model", model_path, "--data", data,
                     "--preprocessing", preprocessing, "--schema", other)
    assert result.exit_code == 2
    assert DataSchema.load(other).sha256 in result.output


def test_predict_without_preprocessing_says_what_is_supported(example, trained):
    _, schema_path, data = example
    model_path, _ = trained
    result = _invoke("predict", "--model", model_path, "--data", data, "--schema", schema_path)
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "needs --preprocessing" in output and "Built-in tasks" in output


def test_validate_data_names_the_file_not_the_word_file_for_a_file_level_problem(example,
                                                                                 tmp_path):
    _, schema_path, data = example
    short = tmp_path / "short.csv"
    short.write_text("\n".join(data.read_text().splitlines()[:8]) + "\n")  # 7 data rows
    result = _invoke("validate-data", "--schema", schema_path, short)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith(f"{short}: 7 data rows, but the schema asks for at least")
               for line in lines), lines
    assert not any(line.startswith("file:") for line in lines)


def test_predict_help_names_the_preprocessing_file_as_it_is_written():
    said = " ".join(_invoke("predict", "--help").output.split())
    assert "hospital-0.preprocessing.json" in said and "<ledger>" not in said
