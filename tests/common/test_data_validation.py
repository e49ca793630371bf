import pytest

from common import data_validation as dv
from common.schema import DataSchema

SCHEMA = DataSchema.from_dict({
    "schema_version": 1,
    "features": [
        {"name": "age", "type": "numeric"},
        {"name": "cp", "type": "categorical", "categories": [1, 2, 3, 4]},
        {"name": "chol", "type": "numeric", "missing": "impute-mean"},
    ],
    "label": {"name": "disease", "type": "binary", "classes": [0, 1]},
    "min_rows": 4,
})
HEADER = "age,cp,chol,disease"
GOOD_ROWS = ["63,1,233,0", "67,4,286,1", "41,2,,0", "56,3.0,236,1"]  # chol may be missing


def _csv(tmp_path, lines, name="data.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _found(problems):
    return {(p.kind, p.row, p.column) for p in problems}


def test_good_file_has_no_problem(tmp_path):
    assert dv.validate_csv(_csv(tmp_path, [HEADER, *GOOD_ROWS]), SCHEMA) == []


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(["63,1,233,0", "67,4,286,", "41,2,1,0", "56,3,2,1"],
                     (dv.MISSING_LABEL, 3, "disease"), id="missing-label"),
        pytest.param(["63,1,233,0", "67,4,286,1", "forty,2,1,0", "56,3,2,1"],
                     (dv.NON_NUMERIC, 4, "age"), id="non-numeric"),
        pytest.param(["63,1,233,0", "67,4,286,1", "41,2,1,0", "56,7,2,1"],
                     (dv.UNKNOWN_CATEGORY, 5, "cp"), id="unknown-category"),
        pytest.param(["63,1,233,0", "67,4,286,1", "41,2,1,0", "56,3,2,2"],
                     (dv.UNKNOWN_CLASS, 5, "disease"), id="unknown-class"),
        pytest.param(["63,1,233,0", ",4,286,1", "41,2,1,0", "56,3,2,1"],
                     (dv.MISSING_VALUE, 3, "age"), id="missing-value-rejected"),
        pytest.param(["63,1,233,0", "67,4,286,1,9", "41,2,1,0", "56,3,2,1"],
                     (dv.RAGGED_ROW, 3, None), id="extra-field"),
        pytest.param(["63,1,233,0", "67,4,286,1", "41,2,1,0"],
                     (dv.TOO_FEW_ROWS, None, None), id="too-few-rows"),
        pytest.param(["63,1,233,1", "67,4,286,1", "41,2,1,1", "56,3,2,1"],
                     (dv.ONE_CLASS, None, "disease"), id="one-class-only"),
    ],
)
def test_each_bad_cell_is_named_by_row_and_column(tmp_path, rows, expected):
    problems = dv.validate_csv(_csv(tmp_path, [HEADER, *rows]), SCHEMA)
    assert _found(problems) == {expected}


def test_wrong_column_set_names_missing_extra_and_duplicate_columns(tmp_path):
    # Arrange: chol missing, note extra, age twice
    lines = ["age,cp,note,disease,age", "63,1,x,0,63", "67,4,y,1,67", "41,2,z,0,41",
             "56,3,w,1,56"]

    # Act
    problems = dv.validate_csv(_csv(tmp_path, lines), SCHEMA)

    # Assert
    assert _found(problems) == {(dv.MISSING_COLUMN, 1, "chol"), (dv.EXTRA_COLUMN, 1, "note"),
                                (dv.DUPLICATE_COLUMN, 1, "age")}


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    # Arrange
    lines = [HEADER, "63,1,233,", "x,9,286,1", "41,2,abc,0", "56,3,2,1"]

    # Act
    problems = dv.validate_csv(_csv(tmp_path, lines), SCHEMA)

    # Assert: sorted by row, then by schema column order
    assert [(p.row, p.column, p.kind) for p in problems] == [
        (2, "disease", dv.MISSING_LABEL),
        (3, "age", dv.NON_NUMERIC),
        (3, "cp", dv.UNKNOWN_CATEGORY),
        (4, "chol", dv.NON_NUMERIC),
    ]
    assert str(problems[1]) == "row 3, column age: non-numeric value 'x'"


def test_empty_file_is_one_problem(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert _found(dv.validate_csv(path, SCHEMA)) == {(dv.EMPTY_FILE, None, None)}


def test_header_only_file_has_too_few_rows(tmp_path):
    problems = dv.validate_csv(_csv(tmp_path, [HEADER]), SCHEMA)
    assert _found(problems) == {(dv.TOO_FEW_ROWS, None, None)}
    assert "0 data rows" in str(problems[0])


@pytest.mark.parametrize(
    "content",
    [pytest.param(None, id="missing-file"), pytest.param(b"\xff\xfe\x00\x01", id="not-utf8")],
)
def test_unreadable_file_is_reported_not_raised(tmp_path, content):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    problems = dv.validate_csv(path, SCHEMA)
    assert [p.kind for p in problems] == [dv.UNREADABLE]
    assert "data.csv" in problems[0].detail


def test_semicolon_file_gets_a_separator_hint(tmp_path):
    problems = dv.validate_csv(_csv(tmp_path, ["age;cp;chol;disease", "63;1;233;0"]), SCHEMA)
    assert any("separated by ';'" in p.detail for p in problems if p.kind == dv.EXTRA_COLUMN)


def test_rows_keep_spreadsheet_numbers_across_blank_lines(tmp_path):
    lines = [HEADER, "63,1,233,0", "", "67,4,286,1", "41,2,1,0", "56,3,2,zero"]
    problems = dv.validate_csv(_csv(tmp_path, lines), SCHEMA)
    assert _found(problems) == {(dv.UNKNOWN_CLASS, 6, "disease")}  # the blank row 3 counts


def test_impute_column_that_is_entirely_missing_is_a_problem(tmp_path):
    lines = [HEADER, "63,1,,0", "67,4,,1", "41,2,NA,0", "56,3,?,1"]
    problems = dv.validate_csv(_csv(tmp_path, lines), SCHEMA)
    assert _found(problems) == {(dv.NOTHING_TO_IMPUTE, None, "chol")}


def test_prediction_files_may_omit_the_label(tmp_path):
    path = _csv(tmp_path, ["age,cp,chol", "63,1,233"])
    assert dv.validate_csv(path, SCHEMA, require_label=False) == []
    assert _found(dv.validate_csv(path, SCHEMA)) == {(dv.MISSING_COLUMN, 1, "disease"),
                                                     (dv.TOO_FEW_ROWS, None, None)}


def test_category_codes_match_text_and_numeric_value():
    import pandas as pd

    codes = dv.category_codes(pd.Series(["1", " 2 ", "3.0", "4.5", "x"]), ("1", "2", "3", "4"))
    assert codes.tolist() == [0, 1, 2, -1, -1]


def test_summary_counts_kinds_without_values_or_rows(tmp_path):
    lines = [HEADER, "63,1,233,", "secret,2,1,", "41,2,1,0", "56,3,2,1"]
    summary = dv.summarize(dv.validate_csv(_csv(tmp_path, lines), SCHEMA))
    assert summary == "3 problems (2 missing label, 1 non-numeric value)"
    assert "secret" not in summary
