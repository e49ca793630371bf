"""Check a hospital's CSV file against the consortium's schema, reporting every problem.

Pure: reads the file, never changes it, never stops at the first problem. Rows are numbered
as a spreadsheet shows them: the header is row 1, the first patient row 2 (blank rows count
and are skipped). Cells are read as text (UTF-8, comma-separated, optional BOM); a cell is
missing when, stripped, it is one of the schema's ``missing_markers``. A categorical cell
matches a category by its text or by numeric value ("1.0" matches category 1).

The same check runs in ``fedcare validate-data`` and when a hospital's client starts.
``DataProblem.detail`` may quote a cell's value: show it at the hospital only; what leaves the
hospital is ``summarize`` (counts by kind, no values, no rows).
"""

import csv
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.schema import DataSchema, FeatureColumn, format_number

UNREADABLE = "unreadable file"
EMPTY_FILE = "empty file"
MISSING_COLUMN = "missing column"
EXTRA_COLUMN = "unexpected column"
DUPLICATE_COLUMN = "duplicate column"
RAGGED_ROW = "wrong number of fields"
MISSING_LABEL = "missing label"
MISSING_VALUE = "missing value"
NON_NUMERIC = "non-numeric value"
UNKNOWN_CATEGORY = "unknown category"
UNKNOWN_CLASS = "unknown class"
TOO_FEW_ROWS = "too few rows"
ONE_CLASS = "one class only"
NOTHING_TO_IMPUTE = "nothing to impute from"


@dataclass(frozen=True, slots=True)
class DataProblem:
    """One problem in a data file.

    Attributes
    ----------
    kind : str
        A fixed phrase (the module's constants, e.g. ``"missing label"``).
    detail : str
        What exactly is wrong; may quote the cell's value.
    row : int | None
        Spreadsheet row (header = 1), when the problem is in one row.
    column : str | None
        The column's name, when the problem is in one column.
    """

    kind: str
    detail: str
    row: int | None = None
    column: str | None = None

    @property
    def location(self) -> str:
        """``row R, column C``, ``row R``, ``column C`` or ``file``."""
        parts = ([f"row {self.row}"] if self.row is not None else []) + (
            [f"column {self.column}"] if self.column is not None else [])
        return ", ".join(parts) or "file"

    def __str__(self) -> str:
        """``row R, column C: detail``."""
        return f"{self.location}: {self.detail}"


@dataclass(frozen=True, slots=True)
class CsvTable:
    """A CSV file's cells as text.

    Attributes
    ----------
    header : tuple[str, ...]
        The header's column names, stripped, in file order.
    frame : pd.DataFrame
        One str column per distinct header name (first occurrence); index = spreadsheet row
        numbers of the data rows that have as many fields as the header.
    data_rows : int
        Non-blank rows after the header, including those with a wrong number of fields.
    header_row : int
        The header's spreadsheet row: 1, unless blank rows come first.
    """

    header: tuple[str, ...]
    frame: pd.DataFrame
    data_rows: int
    header_row: int = 1


def read_table(path: str | os.PathLike[str]) -> tuple[CsvTable | None, list[DataProblem]]:
    """Read a CSV file as text; return the table (None if unusable) and the problems found."""
    file = Path(path)
    records: list[list[str]] = []
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                records.extend(reader)
            except csv.Error as error:
                return None, [DataProblem(UNREADABLE, f"{file} is not a readable CSV file near "
                                          f"row {len(records) + 1}: {error}")]
    except UnicodeDecodeError as error:
        return None, [DataProblem(UNREADABLE, f"{file} is not UTF-8 text (byte {error.start}); "
                                  "save it as 'CSV UTF-8 (comma-separated)'")]
    except OSError as error:
        return None, [DataProblem(UNREADABLE, f"cannot read {file}: {error.strerror or error}")]
    numbered = [(index + 1, r) for index, r in enumerate(records) if any(c.strip() for c in r)]
    if not numbered:
        return None, [DataProblem(EMPTY_FILE, f"{file} is empty: no header row, no data")]
    (header_row, header_cells), data = numbered[0], numbered[1:]
    header = tuple(c.strip() for c in header_cells)
    problems, complete = [], []
    for row, cells in data:
        if len(cells) == len(header):
            complete.append((row, cells))
        else:
            problems.append(DataProblem(RAGGED_ROW, f"{len(cells)} fields, but the header has "
                                        f"{len(header)}", row=row))
    first = {name: header.index(name) for name in dict.fromkeys(header)}
    frame = pd.DataFrame({name: [cells[i] for _, cells in complete] for name, i in first.items()},
                         index=pd.Index([row for row, _ in complete], name="row"), dtype=str)
    table = CsvTable(header=header, frame=frame, data_rows=len(data), header_row=header_row)
    return table, problems


def validate_csv(
    path: str | os.PathLike[str], schema: DataSchema, *, require_label: bool = True
) -> list[DataProblem]:
    """Every problem of a CSV file under `schema`, sorted by row then column; [] if usable.

    With ``require_label=False`` (new patients for prediction) the label column may be
    absent and is not checked, and the row-count and class checks do not apply.
    """
    table, problems = read_table(path)
    if table is not None:
        problems += check_table(table, schema, require_label=require_label)
    return sort_problems(problems, schema)


def sort_problems(problems: list[DataProblem], schema: DataSchema) -> list[DataProblem]:
    """Order problems as a reader scans the file: file-level first, then by row and column."""
    order = {name: i for i, name in enumerate(schema.columns)}
    return sorted(problems, key=lambda p: (p.row or 0, p.row is not None,
                                           order.get(p.column or "", len(order))))


def check_table(table: CsvTable, schema: DataSchema, *, require_label: bool = True
                ) -> list[DataProblem]:
    """Every problem of an already-read table (see ``validate_csv``)."""
    problems = _check_columns(table.header, schema, require_label=require_label,
                              header_row=table.header_row)
    if require_label and table.data_rows < schema.min_rows:
        problems.append(DataProblem(TOO_FEW_ROWS, f"{table.data_rows} data rows, but the schema "
                                    f"asks for at least {schema.min_rows}"))
    elif table.data_rows == 0:
        problems.append(DataProblem(TOO_FEW_ROWS, "no data rows below the header"))
    frame = table.frame
    for feature in schema.features:
        if feature.name in frame:
            problems += _check_feature(frame[feature.name], feature, schema,
                                       check_imputable=require_label)
    if require_label and schema.label.name in frame:
        problems += _check_label(frame[schema.label.name], schema)
    return problems


def _check_columns(header: tuple[str, ...], schema: DataSchema, *, require_label: bool,
                   header_row: int) -> list[DataProblem]:
    problems = []
    expected = schema.columns if require_label else tuple(f.name for f in schema.features)
    for name in expected:
        if name not in header:
            problems.append(DataProblem(MISSING_COLUMN, "missing: the schema requires this "
                                        "column", row=header_row, column=name))
    for position, name in enumerate(header, start=1):
        label = name or f"#{position}"
        if name and header.index(name) != position - 1:
            problems.append(DataProblem(DUPLICATE_COLUMN, "appears more than once in the header",
                                        row=header_row, column=label))
        elif name not in schema.columns and name not in schema.ids:  # ids: passed through
            hint = ""
            if len(header) == 1 and any(sep in name for sep in ";\t|"):
                hint = "; the file looks separated by ';', tab or '|': fedcare reads ',' only"
            problems.append(DataProblem(EXTRA_COLUMN, f"not in the schema{hint}",
                                        row=header_row, column=label))
    return problems


def missing_mask(cells: pd.Series, schema: DataSchema) -> np.ndarray:
    """Return True where a cell is missing (stripped, it is one of the schema's markers)."""
    return np.asarray(cells.str.strip().isin(schema.missing_markers).to_numpy(), dtype=np.bool_)


def parse_numbers(cells: pd.Series) -> np.ndarray:
    """Cells as float64; NaN where a cell is not a number (infinities count as not numbers)."""
    values = pd.to_numeric(cells.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)


def category_codes(cells: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
    """Each cell's index in `categories` (matched by text, then by numeric value); -1 if none."""
    index = {c: i for i, c in enumerate(categories)}

    def code(cell: str) -> int:
        text = cell.strip()
        if text in index:
            return index[text]
        try:
            number = float(text)
        except ValueError:
            return -1
        return index.get(format_number(number), -1) if math.isfinite(number) else -1

    codes = {cell: code(cell) for cell in cells.unique()}
    return np.asarray(cells.map(codes).to_numpy(dtype=np.int64))


def _check_feature(cells: pd.Series, feature: FeatureColumn, schema: DataSchema, *,
                   check_imputable: bool) -> list[DataProblem]:
    problems = []
    missing = missing_mask(cells, schema)
    if feature.missing == "reject":
        problems += [DataProblem(MISSING_VALUE, "missing value (the schema's policy for this "
                                 "column is 'reject')", row=int(r), column=feature.name)
                     for r in cells.index[missing]]
    elif check_imputable and len(cells) and missing.all() and feature.range is None:
        # (A numeric feature with a public range imputes its midpoint: nothing to fit.)
        problems.append(DataProblem(NOTHING_TO_IMPUTE, f"every value is missing: nothing to "
                                    f"{feature.missing} from", column=feature.name))
    if feature.type == "numeric":
        bad = ~missing & np.isnan(parse_numbers(cells))
        problems += [DataProblem(NON_NUMERIC, f"non-numeric value {cells[r]!r}",
                                 row=int(r), column=feature.name) for r in cells.index[bad]]
    else:
        bad = ~missing & (category_codes(cells, feature.categories) < 0)
        allowed = ", ".join(feature.categories)
        problems += [DataProblem(UNKNOWN_CATEGORY, f"unknown category {cells[r]!r}; allowed: "
                                 f"{allowed}", row=int(r), column=feature.name)
                     for r in cells.index[bad]]
    return problems


def _check_label(cells: pd.Series, schema: DataSchema) -> list[DataProblem]:
    label = schema.label
    missing = missing_mask(cells, schema)
    problems = [DataProblem(MISSING_LABEL, "missing label", row=int(r), column=label.name)
                for r in cells.index[missing]]
    if label.type == "numeric":
        bad = ~missing & np.isnan(parse_numbers(cells))
        return problems + [DataProblem(NON_NUMERIC, f"non-numeric label {cells[r]!r}",
                                       row=int(r), column=label.name) for r in cells.index[bad]]
    codes = category_codes(cells, label.classes)
    bad = ~missing & (codes < 0)
    problems += [DataProblem(UNKNOWN_CLASS, f"unknown class {cells[r]!r}; allowed: "
                             f"{', '.join(label.classes)}", row=int(r), column=label.name)
                 for r in cells.index[bad]]
    present = sorted(set(codes[codes >= 0].tolist()))
    if len(present) == 1:
        problems.append(DataProblem(
            ONE_CLASS, f"every labelled row has class {label.classes[present[0]]!r}; training "
            f"needs at least two of {', '.join(label.classes)}", column=label.name))
    return problems


def summarize(problems: list[DataProblem]) -> str:
    """Count problems by kind, without rows or values: what may be told outside the hospital."""
    counts = Counter(p.kind for p in problems)
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    return f"{len(problems)} problem{'s' if len(problems) != 1 else ''} ({kinds})"
