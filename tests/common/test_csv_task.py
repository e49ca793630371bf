import numpy as np
import pandas as pd
import pytest

from common.config import RunConfig
from common.data_validation import validate_csv
from common.schema import DataSchema, SchemaError
from common.tasks import get_task, task_for_config
from common.tasks.csv_preprocessing import CsvPreprocessing, PreprocessingError, parse_features
from common.tasks.csv_task import (
    DataFileRejected,
    csv_task_spec,
    load_csv_hospital,
    split_rows,
    write_example_hospitals,
)
from common.tasks.heart_disease import HOSPITALS, load_frame

NUMERIC = [0, 7, 8, 14, 17]  # age, trestbps, chol, thalach, oldpeak in the encoded layout
ONE_HOT_GROUPS = [[1, 2], [3, 4, 5, 6], [9, 10], [11, 12, 13], [15, 16]]
INDICATORS = [18, 19]  # trestbps_missing, chol_missing


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    directory = tmp_path_factory.mktemp("example")
    schema_path, paths = write_example_hospitals(directory, 5)
    return DataSchema.load(schema_path), schema_path, paths


def test_example_hospitals_hold_the_real_rows_cycling_after_four(example):
    # Arrange
    schema, _, paths = example

    # Act
    frames = [pd.read_csv(p) for p in paths]

    # Assert
    assert [len(f) for f in frames] == [len(load_frame(h)) for h in HOSPITALS] + [303]
    assert frames[4].equals(frames[0])
    assert list(frames[0].columns) == list(schema.columns)
    assert np.array_equal(frames[1]["heart_disease"], load_frame("hungary")["label"])
    assert all(validate_csv(p, schema) == [] for p in paths)


def test_task_spec_shapes_follow_the_schema(example):
    schema, _, _ = example
    task = csv_task_spec(schema)
    assert (task.name, task.kind, task.num_features, task.num_outputs) == ("csv", "binary", 20, 1)
    assert task.hidden_units == (16,) and task.metric_names == ("accuracy", "auc")
    assert task.hospital_names(2) == ["hospital-0", "hospital-1"]
    with pytest.raises(ValueError, match="each hospital loads its own file"):
        task.load(2)


def test_hospital_is_split_about_75_25_and_scaled_by_the_schemas_ranges(example):
    # Arrange
    schema, _, paths = example

    # Act
    hospital = load_csv_hospital(paths[0], schema, name="cleveland").data

    # Assert
    assert (hospital.num_train, hospital.num_test) == (227, 76)  # a hash split: about 25%
    assert hospital.x_train.shape == (227, 20) and hospital.x_train.dtype == np.float32
    raw = load_frame("cleveland")
    age = (raw["age"].to_numpy() - 20) / 60  # the schema's range [20, 80] onto [0, 1]
    assert np.allclose(np.sort(np.concatenate([hospital.x_train[:, 0], hospital.x_test[:, 0]])),
                       np.sort(age), atol=1e-6)
    for group in ONE_HOT_GROUPS:
        assert np.array_equal(hospital.x_train[:, group].sum(axis=1), np.ones(227))
        assert set(np.unique(hospital.x_test[:, group])) <= {0.0, 1.0}
    assert not hospital.x_train[:, INDICATORS].any()  # cleveland measured every value


def test_per_hospital_z_scoring_stays_a_setting(example):
    schema, _, paths = example
    hospital = load_csv_hospital(paths[0], schema, name="cleveland",
                                 normalisation="per-hospital").data
    assert np.allclose(hospital.x_train[:, NUMERIC].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(hospital.x_train[:, NUMERIC].std(axis=0), 1, atol=1e-5)
    # test rows are scaled with the train statistics, so their mean is not forced to 0
    assert not np.allclose(hospital.x_test[:, NUMERIC].mean(axis=0), 0, atol=1e-3)


@pytest.mark.parametrize("indicator", [True, False])
def test_a_missing_value_gets_the_range_midpoint_and_its_indicator(example, indicator):
    schema, _, paths = example  # hospital 2 (switzerland) measured no cholesterol
    hospital = load_csv_hospital(paths[2], schema, name="switzerland",
                                 missing_indicator=indicator).data
    assert np.allclose(hospital.x_train[:, 8], 0.5)  # chol: midpoint of [100, 600]
    assert np.all(hospital.x_train[:, 19] == (1.0 if indicator else 0.0))


def test_shared_normalisation_needs_every_numeric_range(tmp_path):
    schema, path = _tiny(tmp_path, ["1,a,no", "2,a,yes", "3,b,no", "4,a,yes"],
                         [{"name": "x", "type": "numeric"},
                          {"name": "c", "type": "categorical", "categories": ["a", "b"]}])
    with pytest.raises(PreprocessingError, match=r"\['x'\] declare none"):
        load_csv_hospital(path, schema, name="h")
    assert load_csv_hospital(path, schema, name="h", normalisation="per-hospital").data


def test_split_keeps_every_row_on_its_side_whatever_else_the_file_holds():
    keys = [f"patient-{i},{i % 7}" for i in range(400)]
    train, test = split_rows(keys)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(400))
    assert 0.18 < len(test) / 400 < 0.32
    # The same rows in another order, among other rows: each keeps its side.
    shuffled = keys[200:] + [f"new-{i}" for i in range(50)] + keys[:200]
    _, test_again = split_rows(shuffled)
    assert {keys[i] for i in test} == {shuffled[i] for i in test_again} & set(keys)


def test_split_of_a_small_file_always_has_test_rows():
    train, test = split_rows([f"row-{i}" for i in range(4)])
    assert len(test) == 1 and len(train) == 3


def _tiny(tmp_path, rows, features=None):
    schema = DataSchema.from_dict({
        "schema_version": 1,
        "features": features or [
            {"name": "x", "type": "numeric", "missing": "impute-mean", "range": [0, 10]},
            {"name": "c", "type": "categorical", "categories": ["a", "b"],
             "missing": "impute-mode"},
        ],
        "label": {"name": "y", "type": "binary", "classes": ["no", "yes"]},
        "min_rows": 4,
    })
    path = tmp_path / "tiny.csv"
    path.write_text("x,c,y\n" + "\n".join(rows) + "\n")
    return schema, path


MISSING_ROWS = ["1,a,no", "2,a,yes", "3,b,no", "4,a,yes", "5,b,no", ",a,yes", "7,,no", "8,a,yes"]


def test_per_hospital_imputes_the_train_mean_and_mode(tmp_path):
    # Arrange: 8 rows, one x and one c missing
    schema, path = _tiny(tmp_path, MISSING_ROWS)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)

    # Act
    fitted = load_csv_hospital(path, schema, name="h",
                               normalisation="per-hospital").preprocessing
    encoded = fitted.transform(parse_features(table, schema))

    # Assert: the imputed x scales to exactly 0 and is indicated; the imputed c is the
    # training mode "a"
    assert encoded[5, 0] == pytest.approx(0.0, abs=1e-6) and encoded[5, 3] == 1.0
    assert encoded[6, 1:].tolist() == [1.0, 0.0, 0.0]
    assert fitted.impute_categories == {"c": 0}


def test_shared_normalisation_fits_nothing_on_the_rows(tmp_path):
    schema, path = _tiny(tmp_path, MISSING_ROWS)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    fitted = load_csv_hospital(path, schema, name="h").preprocessing
    encoded = fitted.transform(parse_features(table, schema))
    assert encoded[0, 0] == pytest.approx(0.1) and encoded[5, 0] == pytest.approx(0.5)
    assert encoded[5, 3] == 1.0  # indicated
    assert encoded[6, 1:3].tolist() == [0.0, 0.0]  # a missing category: no category
    assert fitted.impute_categories == {}


def test_labels_are_class_indices_in_schema_order(tmp_path):
    schema, path = _tiny(tmp_path, ["1,a,yes", "2,b,no", "3,a,yes", "4,b,no"])
    data = load_csv_hospital(path, schema, name="h").data
    assert sorted(np.concatenate([data.y_train, data.y_test]).tolist()) == [0, 0, 1, 1]


def test_bad_file_is_rejected_with_every_problem(tmp_path):
    schema, path = _tiny(tmp_path, ["1,a,yes", "x,b,", "3,z,yes", "4,b,no"])
    with pytest.raises(DataFileRejected) as caught:
        load_csv_hospital(path, schema, name="h")
    assert [(p.row, p.column) for p in caught.value.problems] == [(3, "x"), (3, "y"), (4, "c")]
    assert "row 3, column x" in str(caught.value)


def test_preprocessing_file_round_trips_and_encodes_identically(tmp_path, example):
    # Arrange
    schema, _, paths = example
    fitted = load_csv_hospital(paths[2], schema, name="switzerland").preprocessing
    table = pd.read_csv(paths[2], dtype=str, keep_default_na=False)
    path = tmp_path / "h.preprocessing.json"

    # Act
    fitted.save(path, seed=0)
    loaded = CsvPreprocessing.load(path)

    # Assert
    parsed = parse_features(table, schema)
    assert loaded.schema.sha256 == schema.sha256
    assert np.array_equal(loaded.transform(parsed), fitted.transform(parsed))


def test_tampered_preprocessing_file_is_refused(tmp_path, example):
    schema, _, paths = example
    path = tmp_path / "p.json"
    load_csv_hospital(paths[3], schema, name="va").preprocessing.save(path)
    path.write_text(path.read_text().replace('"heart_disease"', '"outcome"'))
    with pytest.raises(PreprocessingError, match="does not match its schema_sha256"):
        CsvPreprocessing.load(path)


def _csv_run_config(schema_path, sha256, **extra):
    return {"task": "csv", "hospitals": 5, "csv.schema-path": str(schema_path),
            "csv.schema-sha256": sha256, **extra}


def test_server_builds_the_csv_task_from_its_schema_file(example):
    schema, schema_path, _ = example
    config = RunConfig.from_run_config(_csv_run_config(schema_path, schema.sha256))
    assert task_for_config(config) == csv_task_spec(schema)


def test_server_refuses_a_schema_whose_hash_differs_from_the_run_config(example):
    _, schema_path, _ = example
    config = RunConfig.from_run_config(_csv_run_config(schema_path, "0" * 64))
    with pytest.raises(ValueError, match="has sha256 [0-9a-f]{64}, but the run config's "
                                         f"csv.schema-sha256 is {'0' * 64}"):
        task_for_config(config)


def test_server_names_a_missing_schema_file(tmp_path):
    config = RunConfig.from_run_config(_csv_run_config(tmp_path / "gone.json", "a" * 64))
    with pytest.raises(SchemaError, match=r"gone\.json: cannot read it"):
        task_for_config(config)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        pytest.param({"csv.schema-path": ""}, "csv.schema-path is required", id="no-path"),
        pytest.param({"csv.schema-sha256": ""}, "csv.schema-sha256 must be the schema's",
                     id="no-hash"),
        pytest.param({"csv.schema-sha256": "ABC"}, "64-hex-digit", id="bad-hash"),
        pytest.param({"csv.schema-path": 3}, "csv.schema-path must be a string", id="not-str"),
    ],
)
def test_csv_run_config_is_validated(override, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_run_config({**_csv_run_config("s.json", "a" * 64), **override})


def test_csv_task_has_no_hospital_limit_and_no_registry_entry():
    config = RunConfig.from_run_config(_csv_run_config("s.json", "a" * 64, hospitals=50))
    assert config.hospitals == 50
    with pytest.raises(ValueError, match="built from the consortium's schema file"):
        get_task("csv")


def test_the_split_is_keyed_by_the_hospitals_secret():
    keys = [f"patient-{i}" for i in range(400)]
    _, one = split_rows(keys, b"\x01" * 32)
    _, again = split_rows(keys, b"\x01" * 32)
    _, other = split_rows(keys, b"\x02" * 32)
    assert np.array_equal(one, again) and not np.array_equal(one, other)


def test_a_declared_identifier_decides_the_side_not_the_other_cells(tmp_path):
    features = [{"name": "x", "type": "numeric", "range": [0, 10]}]
    schema = DataSchema.from_dict({
        "schema_version": 1, "features": features, "ids": ["patient_id"], "min_rows": 4,
        "label": {"name": "y", "type": "binary", "classes": ["no", "yes"]}})
    rows = [f"p{i},{i % 10},{'yes' if i % 2 else 'no'}" for i in range(60)]
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("patient_id,x,y\n" + "\n".join(rows) + "\n")
    # The same patients with other measurements: the same patients are test patients.
    moved = []
    for row in rows:
        patient, x, y = row.split(",")
        moved.append(f"{patient},{(int(x) + 3) % 10},{y}")
    second.write_text("patient_id,x,y\n" + "\n".join(moved) + "\n")
    a = load_csv_hospital(first, schema, name="h", split_key=b"k" * 32).data
    b = load_csv_hospital(second, schema, name="h", split_key=b"k" * 32).data
    assert a.split_digest == b.split_digest and a.num_test == b.num_test > 0
