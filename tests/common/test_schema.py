import copy
import json

import pytest

from common.schema import DataSchema, SchemaError
from common.tasks.csv_task import EXAMPLE_SCHEMA


def _write(tmp_path, document, name="schema.json", **dump_options):
    path = tmp_path / name
    path.write_text(json.dumps(document, **dump_options))
    return path


def test_example_schema_loads_with_encoded_width_and_kind(tmp_path):
    # Arrange
    path = _write(tmp_path, EXAMPLE_SCHEMA, indent=2)

    # Act
    schema = DataSchema.load(path)

    # Assert: 5 numeric + one-hot sex 2, cp 4, fbs 2, restecg 3, exang 2 = 18 inputs, then
    # the missing-value indicators of the two numeric columns that may be imputed
    assert schema.num_encoded_features == 20
    assert schema.encoded_feature_names[:4] == ("age", "sex=0", "sex=1", "cp=1")
    assert schema.encoded_feature_names[-2:] == ("trestbps_missing", "chol_missing")
    assert {f.name: f.range for f in schema.features}["age"] == (20.0, 80.0)
    assert schema.kind == "binary" and schema.num_outputs == 1
    assert schema.columns[-1] == "heart_disease"
    assert {f.name: f.missing for f in schema.features}["chol"] == "impute-mean"
    assert {f.name: f.missing for f in schema.features}["age"] == "reject"
    assert schema.hidden_units == (16,) and schema.min_rows == 20


def test_sha256_ignores_formatting_key_order_and_descriptions(tmp_path):
    # Arrange
    compact = _write(tmp_path, EXAMPLE_SCHEMA, "a.json", separators=(",", ":"))
    reordered = dict(reversed(list(copy.deepcopy(EXAMPLE_SCHEMA).items())))
    reordered["description"] = "another wording"
    spaced = _write(tmp_path, reordered, "b.json", indent=4)

    # Act
    first, second = DataSchema.load(compact), DataSchema.load(spaced)

    # Assert
    assert first.sha256 == second.sha256
    assert len(first.sha256) == 64


def test_sha256_changes_when_a_category_changes(tmp_path):
    # Arrange
    changed = copy.deepcopy(EXAMPLE_SCHEMA)
    changed["features"][2]["categories"] = [1, 2, 3]

    # Act
    original = DataSchema.load(_write(tmp_path, EXAMPLE_SCHEMA, "a.json"))
    other = DataSchema.load(_write(tmp_path, changed, "b.json"))

    # Assert
    assert original.sha256 != other.sha256


def test_normalised_schema_round_trips():
    schema = DataSchema.from_dict(EXAMPLE_SCHEMA)
    assert DataSchema.from_dict(schema.to_dict()) == schema


def test_top_level_impute_resolves_by_column_type():
    document = {**EXAMPLE_SCHEMA, "missing": "impute"}
    policies = {f.name: f.missing for f in DataSchema.from_dict(document).features}
    assert policies["age"] == "impute-mean" and policies["cp"] == "impute-mode"


def test_multiclass_and_numeric_labels():
    multiclass = DataSchema.from_dict({**EXAMPLE_SCHEMA, "label": {
        "name": "grade", "type": "multiclass", "classes": ["low", "mid", "high"]}})
    numeric = DataSchema.from_dict({**EXAMPLE_SCHEMA, "label": {
        "name": "los", "type": "numeric", "offset": 5, "scale": 3}})
    assert (multiclass.kind, multiclass.num_outputs) == ("multiclass", 3)
    assert (numeric.kind, numeric.num_outputs) == ("regression", 1)
    assert (numeric.label.offset, numeric.label.scale) == (5.0, 3.0)


def _with(**changes):
    document = copy.deepcopy(EXAMPLE_SCHEMA)
    document.update(changes)
    return document


def _feature(index, **changes):
    document = copy.deepcopy(EXAMPLE_SCHEMA)
    document["features"][index].update(changes)
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param([1, 2], "must be a JSON object", id="not-an-object"),
        pytest.param(_with(schema_version=2), "schema_version must be 1", id="version"),
        pytest.param(_with(colour="red"), r"unknown keys \['colour'\]", id="unknown-key"),
        pytest.param(_with(features=[]), "features must be a non-empty list", id="no-features"),
        pytest.param(_feature(0, type="text"), "feature 'age': type must be one of",
                     id="feature-type"),
        pytest.param(_feature(1, categories=[1]), "at least 2 categories", id="one-category"),
        pytest.param(_feature(1, categories=[0, 0.0]), "repeated values", id="repeat-category"),
        pytest.param(_feature(0, categories=[1, 2]), "only for type 'categorical'",
                     id="numeric-with-categories"),
        pytest.param(_feature(0, missing="impute-mode"), "'reject' or 'impute-mean'",
                     id="policy-for-type"),
        pytest.param(_feature(0, name="sex"), r"repeated: \['sex'\]", id="duplicate-name"),
        pytest.param(_feature(0, name=" age"), "name must be a non-empty string",
                     id="name-spaces"),
        pytest.param(_with(missing="drop"), "missing must be 'reject' or 'impute'",
                     id="global-policy"),
        pytest.param(_with(label={"name": "y", "type": "binary", "classes": [0, 1, 2]}),
                     "exactly 2 classes", id="binary-classes"),
        pytest.param(_with(label={"name": "y", "type": "numeric", "scale": 0}),
                     "scale must be > 0", id="numeric-scale"),
        pytest.param(_with(label={"name": "age", "type": "numeric"}), "repeated",
                     id="label-is-feature"),
        pytest.param(_with(min_rows=2), "min_rows must be an integer >= 4", id="min-rows"),
        pytest.param(_with(hidden_units=[0]), "hidden_units", id="hidden-units"),
        pytest.param(_with(missing_markers=["", "0"], features=[
            {"name": "sex", "type": "categorical", "categories": [0, 1]}]),
            "are missing_markers", id="marker-is-category"),
    ],
)
def test_invalid_schema_is_refused_naming_the_key(document, message):
    with pytest.raises(SchemaError, match=message):
        DataSchema.from_dict(document)


def test_load_names_the_file_and_the_json_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"schema_version": 1,\n "features": [}')
    with pytest.raises(SchemaError, match=r"broken\.json: not valid JSON at line 2"):
        DataSchema.load(path)


def test_load_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(SchemaError, match=r"nope\.json: cannot read it"):
        DataSchema.load(tmp_path / "nope.json")


@pytest.mark.parametrize("value", [[5, 5], [1], "1-2", [0, float("inf")]])
def test_a_range_must_be_low_then_high(value):
    raw = copy.deepcopy(EXAMPLE_SCHEMA)
    raw["features"][0]["range"] = value
    with pytest.raises(SchemaError, match="range must be"):
        DataSchema.from_dict(raw)


def test_a_categorical_column_has_no_range():
    raw = copy.deepcopy(EXAMPLE_SCHEMA)
    raw["features"][1]["range"] = [0, 1]
    with pytest.raises(SchemaError, match="range is only for type 'numeric'"):
        DataSchema.from_dict(raw)
